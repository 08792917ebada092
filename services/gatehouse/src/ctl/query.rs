//! `ctl query run`: a live query followed as it runs, with a progress line
//! (answered/targeted, failed, pending) while hosts answer, then the rows
//! and the hosts that never answered.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gatehouse_api::ops::campaigns::{
    CampaignRef, CampaignRequest, CreateCampaign, GetCampaign, WatchCampaign,
};
use gatehouse_api::registry::Operation;
use serde_json::{Value, json};

use super::client::Api;
use super::render::{cell, json};
use super::{CtlError, Incomplete, failed};

/// `ctl query run`: create the campaign, follow it until every target has
/// answered or `wait` runs out, print the rows and the non-responders.
pub async fn run_query(
    api: &Api,
    j: bool,
    sql: String,
    targets: Vec<String>,
    wait: u64,
    expires_in: Option<u64>,
) -> Result<String, CtlError> {
    let (mut hosts, mut labels, mut platforms, mut names, mut all) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), false);
    for t in targets {
        if t == "all" {
            all = true;
        } else if let Some(l) = t.strip_prefix("label:") {
            labels.push(l.to_owned());
        } else if let Some(p) = t.strip_prefix("platform:") {
            platforms.push(p.to_owned());
        } else if let Some(h) = t.strip_prefix("host:") {
            hosts.push(h.to_owned());
        } else {
            // A label or a host (id, hostname, host identifier): the
            // server says which, or that it could be either.
            names.push(t);
        }
    }
    let c = api
        .call::<CreateCampaign>(&CampaignRequest {
            sql,
            hosts,
            labels,
            all,
            platforms,
            expires_in,
            names,
        })
        .await?;
    let c = json(&c);
    let id = cell(&c["id"]);
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    // Answers stream in as Server-Sent Events until `done` or the wait ends.
    let resp = api
        .request(WatchCampaign::SPEC, &CampaignRef { id: id.clone() })?
        .timeout(Duration::from_secs(wait.saturating_add(30)))
        .send()
        .await
        .map_err(|e| api.unreachable(&e))?;
    if !resp.status().is_success() {
        return Err(CtlError::Refused(format!(
            "watching campaign {id}: {}",
            resp.status()
        )));
    }
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut results: Vec<Value> = Vec::new();
    let mut coverage = c["coverage"].clone();
    let mut silent: Option<Value> = None;
    let progress = |cov: &Value| {
        let n = |k: &str| cov[k].as_u64().unwrap_or(0);
        let (targeted, answered, failed) = (n("targeted"), n("answered"), n("failed"));
        let pending = targeted.saturating_sub(answered + failed + n("expired"));
        eprintln!(
            "[{:>4.0}s] {id}: answered {answered}/{targeted}, failed {failed}, pending {pending}",
            start.elapsed().as_secs_f64()
        );
    };
    'read: loop {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(Err(e))) => return Err(failed(format!("campaign {id}: {e}"))),
            Ok(Some(Ok(b))) => b,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        for (kind, ev) in sse_events(&mut buf) {
            match kind.as_str() {
                "result" => {
                    let r = ev["result"].clone();
                    if !j {
                        print_result(&r);
                    }
                    results.push(r);
                }
                "progress" => {
                    coverage = ev["coverage"].clone();
                    if !j {
                        progress(&coverage);
                    }
                }
                "done" => {
                    coverage = ev["coverage"].clone();
                    silent = Some(ev["non_responders"].clone());
                    break 'read;
                }
                _ => {}
            }
        }
    }
    if !j {
        progress(&coverage);
    }
    let silent = match silent {
        Some(s) => s,
        // Stopped waiting first: who has not answered so far.
        None => json(
            &api.call::<GetCampaign>(&CampaignRef { id: id.clone() })
                .await?
                .non_responders,
        ),
    };
    let failed_hosts: Vec<String> = results
        .iter()
        .filter(|r| r["status"].as_i64().unwrap_or(0) != 0)
        .map(|r| cell(&r["host_id"]))
        .collect();
    let silent_hosts: Vec<String> = silent.as_array().into_iter().flatten().map(cell).collect();
    let output = if j {
        serde_json::to_string_pretty(&json!({
            "campaign": id, "coverage": coverage, "results": results, "non_responders": silent,
            "failed": failed_hosts,
        }))
        .unwrap_or_default()
    } else {
        String::new()
    };
    let mut why = Vec::new();
    if !failed_hosts.is_empty() {
        why.push(format!(
            "{} host(s) answered with an error: {}",
            failed_hosts.len(),
            some_hosts(&failed_hosts, &id)
        ));
    }
    if !silent_hosts.is_empty() {
        why.push(format!(
            "no answer from {} host(s): {}",
            silent_hosts.len(),
            some_hosts(&silent_hosts, &id)
        ));
    }
    let outcome = match (failed_hosts.is_empty(), silent_hosts.is_empty()) {
        (true, true) => {
            return Ok(if j {
                output
            } else {
                format!("every targeted host answered ({} answers)", results.len())
            });
        }
        (false, true) => Incomplete::SomeFailed,
        (true, false) => Incomplete::SomeSilent,
        (false, false) => Incomplete::Both,
    };
    Err(CtlError::Incomplete {
        output,
        why: format!("campaign {id}: {}", why.join("; ")),
        outcome,
    })
}

/// The hosts named in a one-line outcome: the first few, and how many
/// more (a campaign to the whole fleet would otherwise print every id);
/// `--json` and `campaigns get` list them all.
fn some_hosts(hosts: &[String], campaign: &str) -> String {
    const SHOWN: usize = 10;
    if hosts.len() <= SHOWN {
        return hosts.join(", ");
    }
    format!(
        "{}, and {} more (gatehouse ctl campaigns get {campaign} lists every host)",
        hosts[..SHOWN].join(", "),
        hosts.len() - SHOWN
    )
}

/// Takes the complete Server-Sent Events out of `buf` (what is left is
/// the start of the next one): each event's name and its JSON data.
pub fn sse_events(buf: &mut String) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let frame: String = buf.drain(..end + 2).collect();
        let (mut kind, mut data) = (String::new(), String::new());
        for line in frame.lines() {
            if let Some(k) = line.strip_prefix("event:") {
                kind = k.trim().to_owned();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            }
        }
        if let Ok(v) = serde_json::from_str(&data) {
            out.push((kind, v));
        }
    }
    out
}

/// One host's answer as it arrives: a line per row (`host  col=value ...`),
/// or the failure.
fn print_result(r: &Value) {
    let host = cell(&r["host_id"]);
    if r["status"].as_i64().unwrap_or(0) != 0 {
        crate::output::line(&format!("{host}  failed: {}", cell(&r["message"])));
        return;
    }
    let rows = r["rows"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        crate::output::line(&format!("{host}  (no rows)"));
    }
    for row in rows {
        let cols: Vec<String> = row
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect();
        crate::output::line(&format!("{host}  {}", cols.join(" ")));
    }
}

#[cfg(test)]
mod tests {
    use super::some_hosts;

    #[test]
    fn an_outcome_names_a_few_hosts_and_counts_the_rest() {
        let ids: Vec<String> = (0..12).map(|n| format!("h{n}")).collect();
        assert_eq!(some_hosts(&ids[..2], "c1"), "h0, h1");
        assert_eq!(
            some_hosts(&ids[..10], "c1"),
            "h0, h1, h2, h3, h4, h5, h6, h7, h8, h9"
        );
        assert_eq!(
            some_hosts(&ids, "c1"),
            "h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, and 2 more (gatehouse ctl campaigns get c1 lists every host)"
        );
    }
}
