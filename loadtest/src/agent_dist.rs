//! The distributed loop (§7) and the carver (§8) of a simulated agent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::agent::{Agent, Answer, Conn, wait_or_stop};
use crate::judge::Outcome;
use crate::metrics::Endpoint;
use crate::osinfo::{splitmix, uuid_from};
use crate::tables::{run_sql, table_of};

/// Results waiting to be written (kept across failed writes, §7.6).
#[derive(Default)]
struct Pending {
    queries: Map<String, Value>,
    statuses: Map<String, Value>,
    messages: Map<String, Value>,
    stats: Map<String, Value>,
    timing: BTreeMap<String, (Instant, Instant)>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.statuses.is_empty()
    }
}

fn quoted_path(sql: &str) -> String {
    let lower = sql.to_ascii_lowercase();
    lower
        .find("path")
        .and_then(|i| sql[i..].find('\'').map(|j| i + j + 1))
        .and_then(|start| {
            sql[start..]
                .find('\'')
                .map(|end| sql[start..start + end].to_owned())
        })
        .unwrap_or_else(|| "/etc/hosts".into())
}

impl Agent {
    /// Up to 3 attempts, sleeping 1 s then 4 s (§7.2).
    async fn dist_request(
        &self,
        conn: &mut Conn,
        ep: Endpoint,
        path: &str,
        body: &mut Value,
    ) -> Outcome {
        let mut last = Outcome::Failed("not sent".into());
        for attempt in 1..=3u32 {
            if let Some(key) = self.node_key(conn).await {
                body["node_key"] = json!(key);
                last = self.request(conn, ep, path, body, Some(&key), false).await;
                if matches!(last, Outcome::Ok(_)) {
                    return last;
                }
            }
            if attempt < 3 {
                tokio::time::sleep(self.fleet.second * (attempt * attempt)).await;
            }
        }
        last
    }

    pub(crate) async fn distributed_loop(
        self: Arc<Self>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut conn = Conn::new(&self.fleet);
        let mut pending = Pending::default();
        loop {
            let read_sent = Instant::now();
            let out = self
                .dist_request(
                    &mut conn,
                    Endpoint::DistributedRead,
                    &self.fleet.paths.read.clone(),
                    &mut json!({}),
                )
                .await;
            let read_done = Instant::now();
            if let Outcome::Ok(resp) = out {
                self.accept_work(&resp, read_sent, read_done, &mut pending);
            }
            if !pending.is_empty() {
                let mut body = json!({"queries": pending.queries, "statuses": pending.statuses, "messages": pending.messages, "stats": pending.stats});
                let write_sent = Instant::now();
                if let Outcome::Ok(_) = self
                    .dist_request(
                        &mut conn,
                        Endpoint::DistributedWrite,
                        &self.fleet.paths.write.clone(),
                        &mut body,
                    )
                    .await
                {
                    let write_done = Instant::now();
                    let mut answers = self
                        .fleet
                        .answers
                        .by_query
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    for (id, (rs, rd)) in &pending.timing {
                        answers.entry(id.clone()).or_default().push(Answer {
                            read_sent: *rs,
                            read_done: *rd,
                            write_sent,
                            write_done,
                        });
                    }
                    self.fleet.metrics.distributed_answered.fetch_add(
                        pending.timing.len() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    pending = Pending::default();
                }
                // On failure the results stay and merge into the next write.
            }
            let interval = {
                let st = self.state();
                match st.accelerate_until {
                    Some(t) if Instant::now() < t => Duration::from_secs(5),
                    _ => Duration::from_millis(st.options.distributed_interval_ms),
                }
            };
            if wait_or_stop(&stop, interval).await {
                return;
            }
        }
    }

    /// Runs every query of a read response, in id order (§7.4, §7.5).
    fn accept_work(
        self: &Arc<Self>,
        resp: &Map<String, Value>,
        read_sent: Instant,
        read_done: Instant,
        pending: &mut Pending,
    ) {
        // `accelerate` counts only as a 32-bit JSON integer.
        if let Some(secs) = resp
            .get("accelerate")
            .and_then(Value::as_i64)
            .filter(|s| *s > 0 && *s <= i64::from(i32::MAX))
        {
            let until = Instant::now() + Duration::from_secs(secs as u64);
            self.state().accelerate_until = Some(until);
            self.fleet
                .metrics
                .lines_generated
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.state()
                .buffer
                .push_status(crate::schedule::StatusSpec {
                    unix: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                    severity: 0,
                    message: format!("Accelerating distributed query checkins for {secs} seconds")
                        .into(),
                });
            self.wake_logger.notify_one();
        }
        let Some(Value::Object(queries)) = resp.get("queries") else {
            return;
        };
        let discovery = resp.get("discovery").and_then(Value::as_object);
        let mut ids: Vec<&String> = queries.keys().collect();
        ids.sort();
        for id in ids {
            let Some(sql) = queries
                .get(id)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            else {
                // Processing stops at the first invalid entry.
                break;
            };
            // A discovery query with no rows suppresses the query entirely.
            if let Some(d) = discovery.and_then(|d| d.get(id)).and_then(Value::as_str)
                && run_sql(d, self.machine.seed)
                    .map(|r| r.is_empty())
                    .unwrap_or(true)
            {
                continue;
            }
            let started = Instant::now();
            let (rows, status, message) = if table_of(sql).as_deref() == Some("carves")
                && sql.to_ascii_lowercase().contains("carve")
            {
                (self.schedule_carve(sql), 0, String::new())
            } else {
                match run_sql(sql, self.machine.seed) {
                    Ok(rows) => (rows, 0, String::new()),
                    Err(e) => (Vec::new(), 1, e),
                }
            };
            let wall = started.elapsed().as_millis() as u64 + 1 + splitmix(self.machine.seed) % 20;
            pending.queries.insert(id.clone(), Value::Array(rows));
            pending.statuses.insert(id.clone(), json!(status));
            pending.messages.insert(id.clone(), json!(message));
            pending.stats.insert(id.clone(), json!({"wall_time_ms": wall, "user_time": wall / 2, "system_time": wall / 4, "memory": 0}));
            pending.timing.insert(id.clone(), (read_sent, read_done));
        }
    }

    /// The `carves` row (§8.2) and, with the carver on, an upload at the
    /// next minute boundary (§8.3).
    fn schedule_carve(self: &Arc<Self>, sql: &str) -> Vec<Value> {
        if !self.fleet.carver {
            return Vec::new();
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let guid = uuid_from(self.machine.seed, now).to_lowercase();
        let request_id = uuid_from(self.machine.seed ^ 0xca5e, now).to_lowercase();
        let path = quoted_path(sql);
        let agent = self.clone();
        let (g, r) = (guid.clone(), request_id.clone());
        tokio::spawn(async move {
            let secs_to_minute = 60
                - (SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
                    % 60);
            let wait = if agent.fleet.second < Duration::from_secs(1) {
                agent.fleet.second
            } else {
                Duration::from_secs(secs_to_minute)
            };
            tokio::time::sleep(wait).await;
            agent.upload_carve(&g, &r).await;
        });
        vec![
            json!({"time": now.to_string(), "sha256": "", "size": "-1", "path": path, "status": "SCHEDULED",
                    "carve_guid": guid, "request_id": request_id, "carve": "1"}),
        ]
    }

    /// One carve: begin, then every block in order, 3 attempts each (§8.5–8.7).
    async fn upload_carve(&self, guid: &str, request_id: &str) -> bool {
        let mut conn = Conn::new(&self.fleet);
        let size = self.fleet.carve_size;
        let bs = self.fleet.carver_block_size.max(1);
        let data: Vec<u8> = (0..size)
            .map(|i| (splitmix(self.machine.seed ^ (i as u64 / 64)) >> (i % 8)) as u8)
            .collect();
        let count = size.div_ceil(bs);
        let mut begin = json!({"block_count": count, "block_size": bs, "carve_size": size, "carve_id": guid, "request_id": request_id});
        let mut session = None;
        for attempt in 1..=3u32 {
            let key = self.node_key(&mut conn).await;
            if let Some(k) = &key {
                begin["node_key"] = json!(k);
            }
            if let Outcome::Ok(m) = self
                .request(
                    &mut conn,
                    Endpoint::CarveBegin,
                    &self.fleet.paths.carve_begin,
                    &begin,
                    key.as_deref(),
                    false,
                )
                .await
                && let Some(s) = m
                    .get("session_id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            {
                session = Some(s.to_owned());
                break;
            }
            if attempt < 3 {
                tokio::time::sleep(self.fleet.second * (attempt * attempt)).await;
            }
        }
        let Some(session) = session else { return false };
        for (id, chunk) in data.chunks(bs).enumerate() {
            let body = json!({"block_id": id, "session_id": session, "request_id": request_id,
                              "data": base64::engine::general_purpose::STANDARD.encode(chunk)});
            let mut sent = false;
            for attempt in 1..=3u32 {
                let key = self.node_key(&mut conn).await;
                // Carve responses are not judged by error members (§3.3).
                if !matches!(
                    self.request(
                        &mut conn,
                        Endpoint::CarveBlock,
                        &self.fleet.paths.carve_block,
                        &body,
                        key.as_deref(),
                        false
                    )
                    .await,
                    Outcome::Transport(_)
                ) {
                    sent = true;
                    break;
                }
                if attempt < 3 {
                    tokio::time::sleep(self.fleet.second * (attempt * attempt)).await;
                }
            }
            if !sent {
                // DATA POST FAILED: the carve is abandoned, never resumed.
                return false;
            }
        }
        self.fleet
            .metrics
            .carves_completed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }
}
