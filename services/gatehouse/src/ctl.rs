//! `gatehouse ctl`: the operator API from the command line. Human tables by
//! default, `--json` for scripts; errors are the API's own messages with a
//! non-zero exit (2 for a refused request, 1 when the server cannot be
//! reached). `ctl query run` starts a live query, prints a progress line
//! (answered/targeted, failed, pending) while hosts answer, then the rows
//! and the hosts that never answered.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use futures_util::StreamExt;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The API: `https://host:8444`.
    #[arg(long, env = "GATEHOUSE_URL", default_value = "https://127.0.0.1:8444")]
    pub url: String,
    /// An API token (a user's, or the bootstrap admin token).
    #[arg(long, env = "GATEHOUSE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the token from this file (e.g. gatehouse-data/secrets/admin_token).
    #[arg(long, env = "GATEHOUSE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// CA bundle the API's certificate chains to (default: the system's
    /// roots are not used; give the CA, e.g. gatehouse-data/tls/ca.pem).
    #[arg(long, env = "GATEHOUSE_CA")]
    pub ca: Option<PathBuf>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub what: What,
}

#[derive(Subcommand, Debug)]
pub enum What {
    /// The caller's name and role.
    Whoami,
    #[command(subcommand)]
    Hosts(Hosts),
    #[command(subcommand)]
    Queries(Queries),
    #[command(subcommand)]
    Schedules(Schedules),
    /// Live queries.
    #[command(subcommand)]
    Query(LiveQuery),
    #[command(subcommand)]
    Campaigns(Campaigns),
    #[command(subcommand)]
    Users(Users),
    #[command(subcommand)]
    Tokens(Tokens),
    #[command(subcommand, name = "enroll-secrets")]
    EnrollSecrets(EnrollSecrets),
    /// Rules (define them with `apply`: kind `rule`).
    #[command(subcommand)]
    Rules(Rules),
    /// Alert history, newest first.
    Alerts {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Webhook deliveries that failed every attempt.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLetters),
    /// The audit log, newest first.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Makes the server's queries, schedules, label configs and rules match the
    /// YAML specs in DIR (`kind`, `name`, `spec` per document): shows the
    /// difference and changes only what differs; nothing is deleted.
    Apply {
        #[arg(short = 'f', long = "filename")]
        dir: PathBuf,
        /// Show what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Exports definitions as the specs `apply` reads.
    Get {
        /// queries, schedules, label-configs, label-queries, rules, users
        /// (admin) or all (every kind but users).
        kind: String,
        /// yaml or json.
        #[arg(short = 'o', long = "output", default_value = "yaml")]
        output: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum Hosts {
    List {
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        platform: Option<String>,
        #[arg(long)]
        online: Option<bool>,
        /// Text in the hostname, identifier, id or last IP.
        #[arg(long)]
        search: Option<String>,
        /// Only hosts not seen for this many minutes (stale hosts).
        #[arg(long)]
        silent_for: Option<u64>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    Get {
        id: String,
    },
    /// Forget a host (its agent must enroll again to come back).
    Delete {
        id: String,
    },
    /// The config the host is served.
    Config {
        id: String,
    },
    /// Replace the host's operator labels.
    Label {
        id: String,
        labels: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum Queries {
    List,
    Put {
        name: String,
        sql: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum Schedules {
    List,
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub enum LiveQuery {
    /// Runs SQL on the targets and follows the answers.
    Run {
        sql: String,
        /// Targets: `all`, `label:NAME`, or host ids; comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        targets: Vec<String>,
        /// Stop following after this many seconds (the campaign goes on
        /// for offline hosts until it expires).
        #[arg(long, default_value_t = 60)]
        wait: u64,
        /// Seconds the campaign waits for offline hosts.
        #[arg(long)]
        expires_in: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum Campaigns {
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    Get {
        id: String,
    },
    Results {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum Users {
    List,
    Create {
        name: String,
        role: String,
    },
    /// Change the role, or disable/enable.
    Update {
        name: String,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        disabled: Option<bool>,
    },
}

#[derive(Subcommand, Debug)]
pub enum Tokens {
    List,
    /// Prints the secret once.
    Create {
        user: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        expires_in: Option<u64>,
    },
    Revoke {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum Rules {
    List,
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub enum DeadLetters {
    List,
    /// Send it again now; it leaves the list once delivered.
    Redrive {
        id: String,
    },
    /// Drop it without sending.
    Delete {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum EnrollSecrets {
    List,
    /// Prints the value once.
    Create {
        id: String,
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        #[arg(long)]
        expires_in: Option<u64>,
    },
    Revoke {
        id: String,
    },
}

/// Percent-encodes a query parameter value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What went wrong, and the exit code it deserves.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The API refused the request (its message).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Refused(_) => 2,
            CtlError::Failed(_) => 1,
        }
    }
}

fn failed(e: impl std::fmt::Display) -> CtlError {
    CtlError::Failed(e.to_string())
}

struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    fn new(a: &CtlArgs) -> Result<Self, CtlError> {
        let token = match (&a.token, &a.token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| failed(format!("{}: {e}", f.display())))?
                .trim()
                .to_owned(),
            (None, None) => {
                return Err(CtlError::Failed(
                    "give --token, --token-file, GATEHOUSE_TOKEN or GATEHOUSE_TOKEN_FILE".into(),
                ));
            }
        };
        let ca = a.ca.as_ref().ok_or_else(|| {
            failed("give --ca (or GATEHOUSE_CA): the CA of the API's certificate")
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca)
            .map_err(|e| failed(format!("{}: {e}", ca.display())))?
        {
            roots
                .add(c.map_err(|e| failed(format!("{}: {e}", ca.display())))?)
                .map_err(failed)?;
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(failed)?;
        Ok(Self {
            http,
            url: a.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CtlError> {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| failed(format!("{}: {e}", self.url)))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(failed)?;
        let v: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| failed(format!("answer is not JSON: {e}")))?
        };
        if status.is_success() {
            Ok(v)
        } else {
            let msg = v["error"].as_str().unwrap_or("no message").to_owned();
            Err(CtlError::Refused(format!("{} {}", status.as_u16(), msg)))
        }
    }

    async fn get(&self, path: &str) -> Result<Value, CtlError> {
        self.call(reqwest::Method::GET, path, None).await
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A plain aligned table of `cols` of each row.
pub fn table(rows: &[Value], cols: &[&str]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: Vec<String>| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(cols.iter().map(|c| c.to_uppercase()).collect())];
    out.extend(cells.into_iter().map(line));
    out.join("\n")
}

fn show(json_out: bool, v: &Value, cols: &[&str]) -> String {
    if json_out {
        return serde_json::to_string_pretty(v).unwrap_or_default();
    }
    match v {
        Value::Array(rows) => table(rows, cols),
        Value::Object(_) => table(std::slice::from_ref(v), cols),
        other => other.to_string(),
    }
}

/// Runs one `ctl` command; what to print on success.
pub async fn run(a: CtlArgs) -> Result<String, CtlError> {
    use reqwest::Method;
    let api = Api::new(&a)?;
    let j = a.json;
    const HOST_COLS: &[&str] = &[
        "id",
        "hostname",
        "platform",
        "online",
        "last_seen",
        "label_set",
    ];
    Ok(match a.what {
        What::Whoami => show(j, &api.get("/whoami").await?, &["name", "role"]),
        What::Hosts(Hosts::List {
            label,
            platform,
            online,
            search,
            silent_for,
            limit,
        }) => {
            let mut q = vec![format!("limit={limit}")];
            if let Some(s) = search {
                q.push(format!("search={}", urlencode(&s)));
            }
            if let Some(m) = silent_for {
                let cutoff = gatehouse_core::time::now_ms()
                    - i64::try_from(m.saturating_mul(60_000)).unwrap_or(i64::MAX);
                q.push(format!("seen_before={cutoff}"));
            }
            if let Some(l) = label {
                q.push(format!("label={l}"));
            }
            if let Some(p) = platform {
                q.push(format!("platform={p}"));
            }
            if let Some(o) = online {
                q.push(format!("online={o}"));
            }
            let page = api.get(&format!("/hosts?{}", q.join("&"))).await?;
            if j {
                show(true, &page, &[])
            } else {
                show(false, &page["items"], HOST_COLS)
            }
        }
        What::Hosts(Hosts::Delete { id }) => {
            api.call(Method::DELETE, &format!("/hosts/{id}"), None)
                .await?;
            format!("host {id} deleted")
        }
        What::Hosts(Hosts::Get { id }) => {
            show(j, &api.get(&format!("/hosts/{id}")).await?, HOST_COLS)
        }
        What::Hosts(Hosts::Config { id }) => {
            serde_json::to_string_pretty(&api.get(&format!("/hosts/{id}/config")).await?)
                .unwrap_or_default()
        }
        What::Hosts(Hosts::Label { id, labels }) => show(
            j,
            &api.call(
                Method::PUT,
                &format!("/hosts/{id}/labels"),
                Some(json!({ "labels": labels })),
            )
            .await?,
            HOST_COLS,
        ),
        What::Queries(Queries::List) => show(
            j,
            &api.get("/queries").await?,
            &["name", "sql", "description"],
        ),
        What::Queries(Queries::Put {
            name,
            sql,
            description,
        }) => show(
            j,
            &api.call(
                Method::PUT,
                &format!("/queries/{name}"),
                Some(json!({ "sql": sql, "description": description })),
            )
            .await?,
            &["name", "sql", "description"],
        ),
        What::Queries(Queries::Delete { name }) => {
            api.call(Method::DELETE, &format!("/queries/{name}"), None)
                .await?;
            format!("deleted query {name}")
        }
        What::Schedules(Schedules::List) => show(
            j,
            &api.get("/schedules").await?,
            &[
                "name", "query", "interval", "snapshot", "platform", "labels",
            ],
        ),
        What::Schedules(Schedules::Delete { name }) => {
            api.call(Method::DELETE, &format!("/schedules/{name}"), None)
                .await?;
            format!("deleted schedule {name}")
        }
        What::Campaigns(Campaigns::List { limit }) => show(
            j,
            &api.get(&format!("/campaigns?limit={limit}")).await?,
            &["id", "sql", "target_count", "created_by", "expired"],
        ),
        What::Campaigns(Campaigns::Get { id }) => {
            let d = api.get(&format!("/campaigns/{id}")).await?;
            if j {
                show(true, &d, &[])
            } else {
                let mut out = show(
                    false,
                    &d["coverage"],
                    &[
                        "targeted",
                        "queued",
                        "delivered",
                        "answered",
                        "failed",
                        "expired",
                    ],
                );
                out.push('\n');
                out.push_str(&show(
                    false,
                    &d["hosts"],
                    &["host_id", "hostname", "state", "delivery_count"],
                ));
                out
            }
        }
        What::Campaigns(Campaigns::Results { id }) => {
            serde_json::to_string_pretty(&api.get(&format!("/campaigns/{id}/results")).await?)
                .unwrap_or_default()
        }
        What::Query(LiveQuery::Run {
            sql,
            targets,
            wait,
            expires_in,
        }) => run_query(&api, j, sql, targets, wait, expires_in).await?,
        What::Users(Users::List) => show(
            j,
            &api.get("/users").await?,
            &["name", "role", "disabled", "created_by"],
        ),
        What::Users(Users::Create { name, role }) => show(
            j,
            &api.call(
                Method::POST,
                "/users",
                Some(json!({ "name": name, "role": role })),
            )
            .await?,
            &["name", "role"],
        ),
        What::Users(Users::Update {
            name,
            role,
            disabled,
        }) => {
            let mut body = json!({});
            if let Some(r) = role {
                body["role"] = json!(r);
            }
            if let Some(d) = disabled {
                body["disabled"] = json!(d);
            }
            show(
                j,
                &api.call(Method::PATCH, &format!("/users/{name}"), Some(body))
                    .await?,
                &["name", "role", "disabled"],
            )
        }
        What::Tokens(Tokens::List) => show(
            j,
            &api.get("/tokens").await?,
            &["id", "user", "description", "expires_at", "revoked"],
        ),
        What::Tokens(Tokens::Create {
            user,
            description,
            expires_in,
        }) => {
            let t = api
                .call(
                    Method::POST,
                    &format!("/users/{user}/tokens"),
                    Some(json!({ "description": description, "expires_in": expires_in })),
                )
                .await?;
            if j {
                show(true, &t, &[])
            } else {
                format!(
                    "token {} for {}\nsecret (shown once): {}",
                    cell(&t["id"]),
                    cell(&t["user"]),
                    cell(&t["secret"])
                )
            }
        }
        What::Tokens(Tokens::Revoke { id }) => show(
            j,
            &api.call(Method::POST, &format!("/tokens/{id}/revoke"), None)
                .await?,
            &["id", "user", "revoked"],
        ),
        What::EnrollSecrets(EnrollSecrets::List) => show(
            j,
            &api.get("/enroll_secrets").await?,
            &["id", "labels", "expires_at", "revoked", "created_by"],
        ),
        What::EnrollSecrets(EnrollSecrets::Create {
            id,
            labels,
            expires_in,
        }) => {
            let s = api
                .call(
                    Method::POST,
                    "/enroll_secrets",
                    Some(json!({ "id": id, "labels": labels, "expires_in": expires_in })),
                )
                .await?;
            if j {
                show(true, &s, &[])
            } else {
                format!(
                    "enroll secret {} (labels: {})\nvalue (shown once): {}",
                    cell(&s["id"]),
                    cell(&s["labels"]),
                    cell(&s["secret"])
                )
            }
        }
        What::EnrollSecrets(EnrollSecrets::Revoke { id }) => show(
            j,
            &api.call(Method::POST, &format!("/enroll_secrets/{id}/revoke"), None)
                .await?,
            &["id", "revoked"],
        ),
        What::Rules(Rules::List) => {
            let mut rules = api.get("/rules").await?;
            for r in rules.as_array_mut().into_iter().flatten() {
                let event = r["when"]["event"].clone();
                let actions: Vec<Value> = r["actions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a["type"].clone())
                    .collect();
                r["event"] = event;
                r["action_types"] = json!(actions);
            }
            show(
                j,
                &rules,
                &["name", "enabled", "event", "action_types", "description"],
            )
        }
        What::Rules(Rules::Delete { name }) => {
            api.call(reqwest::Method::DELETE, &format!("/rules/{name}"), None)
                .await?;
            format!("rule {name} deleted")
        }
        What::Alerts { limit } => {
            let mut alerts = api.get(&format!("/alerts?limit={limit}")).await?;
            for a in alerts.as_array_mut().into_iter().flatten() {
                let states: Vec<Value> = a["actions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|o| json!(format!("{}:{}", cell(&o["action"]), cell(&o["state"]))))
                    .collect();
                a["delivery"] = json!(states);
            }
            show(
                j,
                &alerts,
                &["at", "rule", "event", "hostname", "summary", "delivery"],
            )
        }
        What::DeadLetters(DeadLetters::List) => show(
            j,
            &api.get("/dead_letters").await?,
            &["id", "dead_at", "attempts", "last_error"],
        ),
        What::DeadLetters(DeadLetters::Redrive { id }) => show(
            j,
            &api.call(
                reqwest::Method::POST,
                &format!("/dead_letters/{id}/redrive"),
                None,
            )
            .await?,
            &["id", "rule", "summary"],
        ),
        What::DeadLetters(DeadLetters::Delete { id }) => {
            api.call(
                reqwest::Method::DELETE,
                &format!("/dead_letters/{id}"),
                None,
            )
            .await?;
            format!("dead letter {id} deleted")
        }
        What::Apply { dir, dry_run } => apply(&api, &dir, dry_run).await?,
        What::Get { kind, output } => get_specs(&api, &kind, &output).await?,
        What::Audit { limit } => show(
            j,
            &api.get(&format!("/audit?limit={limit}")).await?,
            &["at", "actor", "action", "target", "outcome"],
        ),
    })
}

/// `ctl query run`: create the campaign, follow it until every target has
/// answered or `wait` runs out, print the rows and the non-responders.
async fn run_query(
    api: &Api,
    j: bool,
    sql: String,
    targets: Vec<String>,
    wait: u64,
    expires_in: Option<u64>,
) -> Result<String, CtlError> {
    let (mut hosts, mut labels, mut platforms, mut all) =
        (Vec::new(), Vec::new(), Vec::new(), false);
    for t in targets {
        if t == "all" {
            all = true;
        } else if let Some(l) = t.strip_prefix("label:") {
            labels.push(l.to_owned());
        } else if let Some(p) = t.strip_prefix("platform:") {
            platforms.push(p.to_owned());
        } else {
            hosts.push(t);
        }
    }
    let mut body = json!({
        "sql": sql, "hosts": hosts, "labels": labels, "platforms": platforms, "all": all,
    });
    if let Some(e) = expires_in {
        body["expires_in"] = json!(e);
    }
    let c = api
        .call(reqwest::Method::POST, "/campaigns", Some(body))
        .await?;
    let id = cell(&c["id"]);
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    // Answers stream in as Server-Sent Events until `done` or the wait ends.
    let resp = api
        .http
        .get(format!("{}/api/v1/campaigns/{id}/events", api.url))
        .bearer_auth(&api.token)
        .timeout(Duration::from_secs(wait.saturating_add(30)))
        .send()
        .await
        .map_err(|e| failed(format!("{}: {e}", api.url)))?;
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
        None => api.get(&format!("/campaigns/{id}")).await?["non_responders"].clone(),
    };
    if j {
        return Ok(serde_json::to_string_pretty(&json!({
            "campaign": id, "coverage": coverage, "results": results, "non_responders": silent,
        }))
        .unwrap_or_default());
    }
    let silent: Vec<String> = silent.as_array().into_iter().flatten().map(cell).collect();
    Ok(if silent.is_empty() {
        format!("every targeted host answered ({} answers)", results.len())
    } else {
        format!(
            "no answer from {} host(s): {}",
            silent.len(),
            silent.join(", ")
        )
    })
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
        println!("{host}  failed: {}", cell(&r["message"]));
        return;
    }
    let rows = r["rows"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("{host}  (no rows)");
    }
    for row in rows {
        let cols: Vec<String> = row
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect();
        println!("{host}  {}", cols.join(" "));
    }
}

/// One definition as a file holds it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub spec: Value,
}

/// Kinds in the order they are applied (schedules name queries).
const KINDS: &[(&str, &str, &str)] = &[
    ("query", "/queries", "name"),
    ("schedule", "/schedules", "name"),
    ("label_config", "/label_configs", "label"),
    ("label_query", "/label_queries", "label"),
    ("rule", "/rules", "name"),
    ("user", "/users", "name"),
];

/// A user as a spec: its role and whether it is disabled (tokens are made
/// with `ctl tokens create`, never from files).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSpec {
    role: gatehouse_core::model::Role,
    #[serde(default)]
    disabled: bool,
}

/// A definition's spec in one canonical form: parsed as the server's own
/// type (defaults filled in), without its name and update time.
fn canonical(kind: &str, name: &str, spec: &Value) -> Result<Value, String> {
    use gatehouse_core::model::{LabelConfig, Query, Schedule};
    let mut full = spec.as_object().cloned().unwrap_or_default();
    let key = if kind == "label_config" || kind == "label_query" {
        "label"
    } else {
        "name"
    };
    full.insert(key.into(), json!(name));
    full.remove("updated_at");
    let full = Value::Object(full);
    let typed = match kind {
        "query" => serde_json::from_value::<Query>(full).and_then(serde_json::to_value),
        "schedule" => serde_json::from_value::<Schedule>(full).and_then(serde_json::to_value),
        "label_config" => {
            serde_json::from_value::<LabelConfig>(full).and_then(serde_json::to_value)
        }
        "label_query" => serde_json::from_value::<gatehouse_core::model::LabelQuery>(full)
            .and_then(serde_json::to_value),
        "user" => {
            let mut o = full.as_object().cloned().unwrap_or_default();
            o.retain(|k, _| !["name", "created_at", "created_by"].contains(&k.as_str()));
            serde_json::from_value::<UserSpec>(Value::Object(o)).and_then(serde_json::to_value)
        }
        "rule" => serde_json::from_value::<gatehouse_core::rules::Rule>(full)
            .and_then(serde_json::to_value),
        other => {
            return Err(format!(
                "unknown kind {other:?}: query, schedule, label_config, label_query, rule or user"
            ));
        }
    }
    .map_err(|e| format!("{kind} {name}: {e}"))?;
    let mut o = typed.as_object().cloned().unwrap_or_default();
    o.remove(key);
    o.remove("updated_at");
    Ok(Value::Object(o))
}

/// Every spec in `dir` (`*.yaml`, `*.yml`; several documents per file).
pub fn load_specs(dir: &std::path::Path) -> Result<Vec<Spec>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut out: Vec<Spec> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v = serde_norway::Value::deserialize(doc)
                .map_err(|e| format!("{}: {e}", f.display()))?;
            if v.is_null() {
                continue;
            }
            let s: Spec =
                serde_norway::from_value(v).map_err(|e| format!("{}: {e}", f.display()))?;
            canonical(&s.kind, &s.name, &s.spec).map_err(|e| format!("{}: {e}", f.display()))?;
            if out.iter().any(|o| o.kind == s.kind && o.name == s.name) {
                return Err(format!(
                    "{}: {} {} is defined twice",
                    f.display(),
                    s.kind,
                    s.name
                ));
            }
            out.push(s);
        }
    }
    Ok(out)
}

use serde::Deserialize as _;

/// The server's definitions as specs, in canonical form.
async fn server_specs(api: &Api, kinds: &[&str]) -> Result<Vec<Spec>, CtlError> {
    let mut out = Vec::new();
    for (kind, path, key) in KINDS.iter().filter(|k| kinds.contains(&k.0)) {
        for item in api.get(path).await?.as_array().into_iter().flatten() {
            let name = cell(&item[*key]);
            let spec = canonical(kind, &name, item).map_err(CtlError::Failed)?;
            out.push(Spec {
                kind: (*kind).to_owned(),
                name,
                spec,
            });
        }
    }
    Ok(out)
}

fn changes(old: &Value, new: &Value) -> Vec<String> {
    let (o, n) = (
        old.as_object().cloned().unwrap_or_default(),
        new.as_object().cloned().unwrap_or_default(),
    );
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| o.get(*k) != n.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("-".to_owned(), Value::to_string);
            format!("{k}: {} -> {}", show(o.get(k)), show(n.get(k)))
        })
        .collect()
}

async fn apply(api: &Api, dir: &std::path::Path, dry_run: bool) -> Result<String, CtlError> {
    let desired = load_specs(dir).map_err(CtlError::Refused)?;
    let kinds: Vec<&str> = KINDS
        .iter()
        .map(|k| k.0)
        .filter(|k| desired.iter().any(|d| d.kind == *k))
        .collect();
    let current = server_specs(api, &kinds).await?;
    let mut lines = Vec::new();
    let (mut created, mut changed, mut same) = (0, 0, 0);
    for (kind, path, _) in KINDS {
        for d in desired.iter().filter(|d| d.kind == *kind) {
            let want = canonical(kind, &d.name, &d.spec).map_err(CtlError::Refused)?;
            let have = current
                .iter()
                .find(|c| c.kind == d.kind && c.name == d.name);
            match have {
                Some(h) if h.spec == want => {
                    same += 1;
                    lines.push(format!("= {kind} {}", d.name));
                    continue;
                }
                Some(h) => {
                    changed += 1;
                    lines.push(format!("~ {kind} {}", d.name));
                    lines.extend(
                        changes(&h.spec, &want)
                            .into_iter()
                            .map(|c| format!("    {c}")),
                    );
                }
                None => {
                    created += 1;
                    lines.push(format!("+ {kind} {}", d.name));
                }
            }
            if dry_run {
                continue;
            }
            let refused = |e: CtlError| CtlError::Refused(format!("{kind} {}: {e}", d.name));
            if *kind == "user" {
                // Users are created, then changed (role, disabled).
                if have.is_none() {
                    let body = json!({"name": d.name, "role": want["role"]});
                    api.call(reqwest::Method::POST, path, Some(body))
                        .await
                        .map_err(refused)?;
                    if want["disabled"] != json!(true) {
                        continue;
                    }
                }
                api.call(
                    reqwest::Method::PATCH,
                    &format!("{path}/{}", d.name),
                    Some(want),
                )
                .await
                .map_err(refused)?;
                continue;
            }
            api.call(
                reqwest::Method::PUT,
                &format!("{path}/{}", d.name),
                Some(want),
            )
            .await
            .map_err(refused)?;
        }
    }
    lines.push(format!(
        "{created} to create, {changed} to change, {same} unchanged{}",
        if dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        }
    ));
    Ok(lines.join("\n"))
}

async fn get_specs(api: &Api, kind: &str, output: &str) -> Result<String, CtlError> {
    let want: &[&str] = match kind {
        "queries" => &["query"],
        "schedules" => &["schedule"],
        "label-configs" => &["label_config"],
        "label-queries" => &["label_query"],
        "rules" => &["rule"],
        "users" => &["user"],
        "all" => &["query", "schedule", "label_config", "label_query", "rule"],
        other => {
            return Err(CtlError::Refused(format!(
                "{other:?}: queries, schedules, label-configs, label-queries, rules, users (admin) or all"
            )));
        }
    };
    let specs: Vec<Spec> = server_specs(api, want).await?;
    match output {
        "json" => Ok(serde_json::to_string_pretty(&specs).unwrap_or_default()),
        "yaml" => {
            let mut out = String::new();
            for s in &specs {
                out.push_str("---\n");
                out.push_str(&serde_norway::to_string(s).map_err(failed)?);
            }
            Ok(out.trim_end().to_owned())
        }
        other => Err(CtlError::Refused(format!("-o {other:?}: yaml or json"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_compare_in_canonical_form() {
        // Defaults filled in: an omitted `removed` is the default `true`.
        let a = canonical(
            "schedule",
            "s",
            &json!({"query": "q", "interval": 60, "labels": ["all"]}),
        );
        let b = canonical(
            "schedule",
            "s",
            &json!({"query": "q", "interval": 60, "labels": ["all"], "removed": true, "snapshot": false, "updated_at": 5}),
        );
        assert_eq!(a, b);
        assert!(canonical("schedule", "s", &json!({"query": "q"})).is_err());
        assert!(canonical("pack", "p", &json!({})).is_err());
        let old = json!({"interval": 60, "query": "q"});
        let new = json!({"interval": 30, "query": "q"});
        assert_eq!(changes(&old, &new), vec!["interval: 60 -> 30".to_owned()]);
    }

    #[test]
    fn tables_align_and_show_missing_cells() {
        let rows = vec![
            json!({"name": "alice", "role": "operator"}),
            json!({"name": "bo", "role": null}),
        ];
        assert_eq!(
            table(&rows, &["name", "role"]),
            "NAME   ROLE\nalice  operator\nbo     -"
        );
    }
}
