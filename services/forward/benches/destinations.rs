//! Log destinations' throughput and cost on this machine: the forward log
//! is filled with batches of typical result lines (appending is measured
//! too: it is what each stored batch costs the all-in-one once a
//! destination is configured), then one forwarder per destination kind
//! drains all of it into a real receiver in another process, and this
//! process's CPU is read before and after: lines per second, lines per
//! second per core of forwarding, and CPU per forwarded line.
//!
//! Receivers: the file destination writes to a temporary directory; HTTP
//! kinds (Splunk HEC, Elasticsearch `_bulk`, webhook) post to a minimal
//! HTTP server this benchmark runs as a child process (so its CPU is not
//! counted); Kafka to the tests' protocol-level broker, also a child
//! process; syslog goes to rsyslogd (TCP) and NATS to nats-server with a
//! JetStream stream, each skipped when not installed.
//!
//! Run: `cargo bench -p gatehouse-forward --bench destinations`
//! (`LINES=200000` to change the volume). Prints a Markdown table.
//!
//! A benchmark whose set-up fails has nothing to measure: it unwraps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gatehouse_testkit::usage::cpu_seconds;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_core::HostId;
use gatehouse_core::model::{LogRecords, ResultKind, ResultLog};
use gatehouse_core::ports::ForwardLog;
use gatehouse_core::time::{SystemClock, system_clock};
use gatehouse_forward::DestinationConfig;
use gatehouse_forward::log::{EmbeddedForwardLog, Retention};
use gatehouse_runtime::Shutdown;
use gatehouse_runtime::metrics::Metrics;
use serde_json::json;

#[path = "../tests/support/kafka_broker.rs"]
mod kafka_broker;

const BATCH: usize = 100;

fn batch(host: usize, n: usize) -> LogRecords {
    let id = HostId::from_identity(&format!("hw:bench-{host}"));
    LogRecords::Results(
        (0..BATCH)
            .map(|i| ResultLog {
                host_id: id.clone(),
                name: "pack_inventory_users".into(),
                unix_time: 1_717_496_431 + n as i64,
                kind: ResultKind::Event,
                action: "added".into(),
                rows: 1,
                line_id: format!("{host}-{n}-{i}"),
                received_at: 0,
                line: json!({
                    "name": "pack_inventory_users",
                    "hostIdentifier": format!("host-{host:05}.corp.example.com"),
                    "calendarTime": "Tue Jun  4 10:20:31 2024 UTC",
                    "unixTime": 1_717_496_431 + n as i64,
                    "epoch": 0, "counter": n, "numerics": false,
                    "decorations": {"host_uuid": format!("4C4C4544-{host:04}-{n:04}"), "username": "svc"},
                    "columns": {"uid": format!("{i}"), "gid": "20", "username": format!("user{i}"),
                                "description": "", "directory": format!("/Users/user{i}"),
                                "shell": "/bin/zsh", "uuid": format!("A1B2C3D4-{i:04}")},
                    "action": "added"
                })
                .into(),
            })
            .collect(),
    )
}

/// The child-process HTTP receiver: 200 and an empty `_bulk` answer to
/// every request; prints its port.
fn receiver() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let app = axum::Router::new().fallback(|_body: axum::body::Bytes| async {
            axum::Json(json!({"errors": false, "items": [], "text": "Success", "code": 0}))
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", l.local_addr().unwrap().port());
        axum::serve(l, app).await.unwrap();
    });
}

/// The child-process Kafka broker (the tests' protocol-level stand-in):
/// prints its port.
fn kafka_receiver() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let b = kafka_broker::broker(&[("osquery_results", 8)]).await;
        println!("{}", b.port);
        std::future::pending::<()>().await;
    });
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_receiver(arg: &str) -> (Killed, u16) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg(arg)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Killed(child), line.trim().parse().unwrap())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rsyslog(dir: &Path) -> Option<(Killed, u16)> {
    let bin = PathBuf::from("/usr/sbin/rsyslogd");
    if !bin.exists() {
        return None;
    }
    let port = free_port();
    let work = dir.join("spool");
    std::fs::create_dir_all(&work).unwrap();
    let conf = dir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{}\")\nmodule(load=\"imtcp\")\ninput(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\")\n*.* action(type=\"omfile\" file=\"{}\")\n",
            work.display(),
            dir.join("out.log").display()
        ),
    )
    .unwrap();
    let child = Killed(
        Command::new(bin)
            .args(["-n", "-i"])
            .arg(dir.join("pid"))
            .arg("-f")
            .arg(conf)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((child, port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn destination(name: &str, toml: &str) -> DestinationConfig {
    #[derive(serde::Deserialize)]
    struct Doc {
        destinations: Vec<DestinationConfig>,
    }
    let doc = format!(
        "[[destinations]]\nname = \"{name}\"\nstart = \"oldest\"\n[destinations.pacing]\nmax_lines = 500\nlinger_ms = 0\n{toml}"
    );
    toml::from_str::<Doc>(&doc).unwrap().destinations.remove(0)
}

struct Row {
    kind: &'static str,
    lines: u64,
    secs: f64,
    cpu: f64,
}

async fn drain(log: &Arc<dyn ForwardLog>, d: DestinationConfig, total: u64) -> (f64, f64) {
    let m = Metrics::new();
    let fwd = d
        .forwarder(
            log.clone(),
            gatehouse_forward::Services::default(),
            system_clock(),
            &m,
            None,
        )
        .unwrap();
    let control = fwd.control();
    let stop = Shutdown::new();
    let (c0, t0) = (cpu_seconds().unwrap(), Instant::now());
    let task = tokio::spawn(fwd.run(stop.clone()));
    loop {
        let s = &control.state();
        if s.delivered >= total {
            break;
        }
        if let Some(e) = &s.last_error {
            eprintln!("{}: {e}", d.name);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (secs, used) = (t0.elapsed().as_secs_f64(), cpu_seconds().unwrap() - c0);
    stop.trigger();
    task.await.unwrap();
    (secs, used)
}

fn main() {
    if std::env::args().any(|a| a == "--receiver") {
        receiver();
        return;
    }
    if std::env::args().any(|a| a == "--kafka") {
        kafka_receiver();
        return;
    }
    let total_lines: usize = std::env::var("LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let batches = total_lines / BATCH;
    let total = (batches * BATCH) as u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedForwardLog::open(
            &dir.path().join("forward"),
            Retention {
                max_bytes: 8 << 30,
                ..Retention::default()
            },
            Arc::new(SystemClock),
        )
        .unwrap();
        // Appends as the edge makes them: one synced append per batch.
        let payloads: Vec<(String, bytes::Bytes)> = (0..batches)
            .map(|n| {
                let r = batch(n % 1000, n);
                (r.batch_id(), gatehouse_bus::events::encode_forward_logs(&r))
            })
            .collect();
        let bytes: usize = payloads.iter().map(|(_, p)| p.len()).sum();
        let (c0, t0) = (cpu_seconds().unwrap(), Instant::now());
        for (id, p) in &payloads {
            log.append(id, BATCH as u32, p.clone()).await.unwrap();
        }
        let (append_secs, append_cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds().unwrap() - c0);
        println!(
            "forward log: {batches} batches of {BATCH} lines ({:.0} bytes per line) appended in {append_secs:.2} s: {:.0} batches/s, {:.0} µs CPU per batch ({:.2} µs per line)",
            bytes as f64 / total as f64,
            batches as f64 / append_secs,
            append_cpu * 1e6 / batches as f64,
            append_cpu * 1e6 / total as f64,
        );
        let log: Arc<dyn ForwardLog> = Arc::new(log);
        let mut rows = Vec::new();
        let files = dir.path().join("files");
        let d = destination(
            "file",
            &format!("[destinations.file]\ndir = \"{}\"\nrotate_bytes = 104857600\n", files.display()),
        );
        let (secs, cpu_used) = drain(&log, d, total).await;
        rows.push(Row { kind: "file", lines: total, secs, cpu: cpu_used });

        let (_rx, port) = spawn_receiver("--receiver");
        let url = format!("http://127.0.0.1:{port}");
        for (kind, toml) in [
            ("splunk_hec", format!("[destinations.splunk_hec]\nurl = \"{url}\"\ntoken = \"t\"\n")),
            ("splunk_hec gzip", format!("[destinations.splunk_hec]\nurl = \"{url}\"\ntoken = \"t\"\ngzip = true\n")),
            ("elasticsearch", format!("[destinations.elasticsearch]\nurl = \"{url}\"\n")),
            ("webhook", format!("[destinations.webhook]\nurl = \"{url}/hook\"\nsecret = \"s\"\n")),
        ] {
            let name = kind.replace(' ', "_");
            let (secs, cpu_used) = drain(&log, destination(&name, &toml), total).await;
            rows.push(Row { kind, lines: total, secs, cpu: cpu_used });
        }
        let (_kafka, port) = spawn_receiver("--kafka");
        let d = destination(
            "kafka",
            &format!("[destinations.kafka]\nbrokers = [\"127.0.0.1:{port}\"]\ntopic = \"osquery_{{log}}\"\n"),
        );
        let (secs, cpu_used) = drain(&log, d, total).await;
        rows.push(Row { kind: "kafka (protocol stand-in broker)", lines: total, secs, cpu: cpu_used });
        match rsyslog(dir.path()) {
            Some((_r, port)) => {
                let d = destination("syslog", &format!("[destinations.syslog]\naddress = \"127.0.0.1:{port}\"\n"));
                let (secs, cpu_used) = drain(&log, d, total).await;
                rows.push(Row { kind: "syslog (TCP)", lines: total, secs, cpu: cpu_used });
            }
            None => println!("syslog: NOT RUN (no rsyslogd)"),
        }
        if std::env::var_os("GATEHOUSE_NATS_SERVER").is_some() {
            let nats = gatehouse_bus::nats_test_server::NatsTestServer::start().unwrap();
            // The cluster's forward log: the same batches appended to
            // JetStream (one entry each here; ingest gathers a fetch's
            // batches into fewer), nats-server's CPU not counted.
            let js_log = gatehouse_forward::jetstream::JetStreamForwardLog::open(
                async_nats::connect(nats.url()).await.unwrap(),
                gatehouse_forward::jetstream::JetStreamForwardConfig {
                    max_bytes: 8 << 30,
                    max_age: Duration::from_secs(3600),
                    replicas: 1,
                    duplicate_window: Duration::from_secs(120),
                },
                Arc::new(SystemClock),
            )
            .await
            .unwrap();
            let (c0, t0) = (cpu_seconds().unwrap(), Instant::now());
            for (id, p) in &payloads {
                js_log.append(id, BATCH as u32, p.clone()).await.unwrap();
            }
            let (secs, used) = (t0.elapsed().as_secs_f64(), cpu_seconds().unwrap() - c0);
            println!(
                "JetStream forward log (the cluster's): {batches} batches appended in {secs:.2} s: {:.0} batches/s, {:.0} µs CPU per batch ({:.2} µs per line), nats-server not counted",
                batches as f64 / secs,
                used * 1e6 / batches as f64,
                used * 1e6 / total as f64,
            );
            let client = async_nats::connect(nats.url()).await.unwrap();
            async_nats::jetstream::new(client)
                .get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: "OSQ".into(),
                    subjects: vec!["osq.>".into()],
                    ..Default::default()
                })
                .await
                .unwrap();
            let d = destination(
                "nats",
                &format!("[destinations.nats]\nsubject = \"osq.{{log}}.{{query}}\"\n[destinations.nats.connection]\nservers = [\"{}\"]\n", nats.url()),
            );
            let (secs, cpu_used) = drain(&log, d, total).await;
            rows.push(Row { kind: "nats (JetStream)", lines: total, secs, cpu: cpu_used });
        } else {
            println!("nats: NOT RUN (set GATEHOUSE_NATS_SERVER)");
        }
        println!();
        println!("| destination | lines | seconds | lines/s | lines/s per core of forwarding | CPU µs per line |");
        println!("|---|---|---|---|---|---|");
        for r in rows {
            println!(
                "| {} | {} | {:.2} | {:.0} | {:.0} | {:.2} |",
                r.kind,
                r.lines,
                r.secs,
                r.lines as f64 / r.secs,
                r.lines as f64 / r.cpu.max(0.01),
                r.cpu * 1e6 / r.lines as f64
            );
        }
    });
}
