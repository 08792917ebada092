//! The harness's agents behave like osqueryd: checked against a tiny
//! scripted TLS server that records every request and answers as told.
//! The scripted server's set-up unwraps: it is test code outside a #[test].
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse_loadtest::agent::{Agent, Answers, Fleet, Paths};
use gatehouse_loadtest::metrics::Metrics;
use gatehouse_loadtest::osinfo::{Machine, OsMix};
use gatehouse_loadtest::schedule::Options;
use gatehouse_loadtest::transport::{Target, client_tls};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    path: String,
    auth: Option<String>,
    body: Value,
}

/// What the script answers.
enum Answer {
    Json(u16, Value),
    /// A status with a zero-length body.
    Empty(u16),
    /// Drop the connection without a response.
    Close,
}

type Script = Arc<dyn Fn(&Seen, &[Seen]) -> Answer + Send + Sync>;

struct Scripted {
    addr: SocketAddr,
    ca: Vec<u8>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn scripted(script: Script) -> Scripted {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .and_then(|p| p.self_signed(&key))
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let script = script.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let script = script.clone();
                        let log = log.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let auth = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let gz = req.headers().get("content-encoding").is_some();
                            let raw = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let raw = if gz {
                                use std::io::Read;
                                let mut out = Vec::new();
                                let _ =
                                    flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out);
                                Bytes::from(out)
                            } else {
                                raw
                            };
                            let s = Seen {
                                at: Instant::now(),
                                path,
                                auth,
                                body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
                            };
                            let answer = {
                                let mut all = log.lock().unwrap_or_else(|p| p.into_inner());
                                all.push(s.clone());
                                script(&s, &all)
                            };
                            match answer {
                                Answer::Json(st, v) => Ok(http::Response::builder()
                                    .status(st)
                                    .body(Full::new(Bytes::from(
                                        serde_json::to_vec(&v).unwrap_or_default(),
                                    )))
                                    .unwrap_or_default()),
                                Answer::Empty(st) => Ok(http::Response::builder()
                                    .status(st)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap_or_default()),
                                Answer::Close => Err(std::io::Error::other("scripted close")),
                            }
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Scripted {
        addr,
        ca: cert.pem().into_bytes(),
        seen,
    }
}

fn fleet(s: &Scripted, period_ms: u64) -> Fleet {
    let tls = client_tls(&s.ca).unwrap();
    Fleet {
        target: Arc::new(
            Target::new(s.addr, &format!("localhost:{}", s.addr.port()), tls, vec![]).unwrap(),
        ),
        paths: Paths::with_prefix("/o"),
        enroll_secret: "s3cret".into(),
        options: Options {
            logger_tls_period_ms: period_ms,
            distributed_interval_ms: 60_000,
            ..Options::default()
        },
        config_refresh_ms: 0,
        config_accelerated_refresh_ms: 300_000,
        enroll_max_attempts: 12,
        logger_backoff_max_ms: 3_600_000,
        distributed: false,
        carver: false,
        carver_block_size: 8192,
        carve_size: 0,
        send_status_logs: true,
        pool: None,
        metrics: Arc::new(Metrics::default()),
        answers: Arc::new(Answers::default()),
        release: None,
        backlog_secs: 0,
        second: Duration::from_millis(10),
    }
}

fn count(seen: &Arc<Mutex<Vec<Seen>>>, path: &str) -> usize {
    seen.lock()
        .map(|s| s.iter().filter(|x| x.path == path).count())
        .unwrap_or(0)
}

fn log_type(s: &Seen) -> &str {
    s.body["log_type"].as_str().unwrap_or("")
}

/// The log POSTs of `log_type` seen so far, in order.
fn logs_of(seen: &Arc<Mutex<Vec<Seen>>>, log_type_: &str) -> Vec<Seen> {
    seen.lock()
        .map(|s| {
            s.iter()
                .filter(|x| x.path == "/o/log" && log_type(x) == log_type_)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// A config with many differential queries: the first run of each adds
/// every row, so the first flush finds more than 1024 result lines.
fn big_config() -> Value {
    let schedule: serde_json::Map<String, Value> = (0..9)
        .map(|i| {
            (
                format!("p{i}"),
                json!({"query": "SELECT * FROM processes", "interval": 3600}),
            )
        })
        .collect();
    json!({"schedule": schedule})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logger_backs_off_k_squared_periods_and_resends_the_same_lines() {
    // Result POSTs fail three times, then succeed.
    let script: Script = Arc::new(|s, all| match s.path.as_str() {
        "/o/enroll" => Answer::Json(200, json!({"node_key": "k1"})),
        "/o/config" => Answer::Json(200, big_config()),
        "/o/log" if log_type(s) == "result" => {
            let n = all
                .iter()
                .filter(|x| x.path == "/o/log" && log_type(x) == "result")
                .count();
            if n <= 3 {
                Answer::Json(503, json!({"error": "busy"}))
            } else {
                Answer::Json(200, json!({}))
            }
        }
        _ => Answer::Json(200, json!({})),
    });
    let server = scripted(script).await;
    let f = fleet(&server, 200);
    let agent = Agent::new(Machine::new(1, &OsMix::default(), 1), f.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Backlog: the schedule's first run, before the forwarder starts.
    let mut f2 = f.clone();
    f2.backlog_secs = 3600;
    let agent = Agent::new(agent.machine.clone(), f2);
    let task = tokio::spawn(agent.clone().run(stop_rx));
    gatehouse_testkit::until("six log POSTs", Duration::from_secs(15), async || {
        count(&server.seen, "/o/log") >= 6
    })
    .await;
    let results = logs_of(&server.seen, "result");
    assert!(results.len() >= 4, "{}", results.len());
    // Pauses of k² periods after the k-th failure: 1, 4, 9 periods skipped.
    let gaps: Vec<f64> = results
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at).as_secs_f64() * 1000.0)
        .collect();
    // Never sooner than the back-off allows; later only by scheduling slack.
    for (k, expect) in [(0usize, 400.0), (1, 1000.0), (2, 2000.0)] {
        assert!(
            gaps[k] > expect - 60.0 && gaps[k] < expect + 400.0,
            "gap {k}: {:.0} ms, expected {expect} ms ({gaps:?})",
            gaps[k]
        );
    }
    // Every attempt carried the same 1024 lines (the cap), with the key.
    let first = results[0].body["data"].clone();
    assert_eq!(first.as_array().map(Vec::len), Some(1024));
    for r in &results[1..4] {
        assert_eq!(r.body["data"], first, "a failed batch is re-sent unchanged");
        assert_eq!(r.auth.as_deref(), Some("NodeKey k1"));
        assert_eq!(r.body["node_key"], "k1");
    }
    // After the success the next result POST carries the rest (1620 - 1024).
    gatehouse_testkit::until(
        "the rest of the results posted",
        Duration::from_secs(20),
        async || logs_of(&server.seen, "result").len() >= 5,
    )
    .await;
    let fifth = logs_of(&server.seen, "result").into_iter().nth(4);
    // The first run's remaining 596 lines, plus whatever later scheduled
    // runs added meanwhile (simulated time runs at 100x, so a slow machine
    // sees more of it); none repeats the acknowledged batch.
    let rest = fifth
        .and_then(|s| s.body["data"].as_array().cloned())
        .unwrap_or_default();
    assert!(rest.len() >= 1620 - 1024, "{} lines", rest.len());
    let sent = first.as_array().cloned().unwrap_or_default();
    assert!(
        rest.iter().all(|l| !sent.contains(l)),
        "a line acknowledged in the first batch was sent again"
    );
    // Status lines waited while results filled the cap, and went out
    // separately even while results were failing.
    let statuses = logs_of(&server.seen, "status");
    assert!(!statuses.is_empty());
    assert!(
        statuses[0].at > results[3].at,
        "status waited for the result backlog to fit under the cap"
    );
    let _ = stop_tx.send(true);
    let _ = task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_invalid_wipes_the_key_and_the_agent_reenrolls_then_resends() {
    let script: Script = Arc::new(|s, all| match s.path.as_str() {
        "/o/enroll" => {
            let n = all.iter().filter(|x| x.path == "/o/enroll").count();
            Answer::Json(200, json!({"node_key": format!("k{n}")}))
        }
        "/o/config" => Answer::Json(200, json!({})),
        "/o/log" if s.body["node_key"] == "k1" => Answer::Json(401, json!({"node_invalid": true})),
        _ => Answer::Json(200, json!({})),
    });
    let server = scripted(script).await;
    let f = fleet(&server, 100);
    let agent = Agent::new(Machine::new(2, &OsMix::default(), 1), f.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(agent.clone().run(stop_rx));
    gatehouse_testkit::until(
        "a log POST with the new key",
        Duration::from_secs(20),
        async || {
            ["result", "status"]
                .iter()
                .flat_map(|t| logs_of(&server.seen, t))
                .any(|x| x.body["node_key"] == "k2")
        },
    )
    .await;
    let seen = server.seen.lock().map(|s| s.clone()).unwrap_or_default();
    let enrolls: Vec<&Seen> = seen.iter().filter(|x| x.path == "/o/enroll").collect();
    assert_eq!(enrolls.len(), 2);
    // Enroll carries no key and no Authorization header, but the details.
    assert!(enrolls[1].auth.is_none() && enrolls[1].body.get("node_key").is_none());
    assert!(enrolls[1].body["host_details"]["system_info"]["uuid"].is_string());
    let rejected = seen
        .iter()
        .find(|x| x.path == "/o/log" && x.body["node_key"] == "k1")
        .map(|x| x.body["data"].clone());
    let accepted = seen
        .iter()
        .find(|x| x.path == "/o/log" && x.body["node_key"] == "k2")
        .map(|x| x.body["data"].clone());
    assert_eq!(
        rejected, accepted,
        "the rejected batch is sent again after re-enrolling"
    );
    assert_eq!(
        f.metrics
            .reenrollments
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let _ = stop_tx.send(true);
    let _ = task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_retried_once_and_an_empty_body_counts_as_success() {
    // The first config request is read and the connection dropped: the
    // transport reconnects and sends it once more (§2.6). Log POSTs get a
    // 503 with an empty body, which the agent takes as success (§3).
    let script: Script = Arc::new(|s, all| match s.path.as_str() {
        "/o/enroll" => Answer::Json(200, json!({"node_key": "k"})),
        "/o/config" if all.iter().filter(|x| x.path == "/o/config").count() == 1 => Answer::Close,
        "/o/config" => Answer::Json(
            200,
            json!({"schedule": {"u": {"query": "SELECT * FROM users", "interval": 3600}}}),
        ),
        "/o/log" => Answer::Empty(503),
        _ => Answer::Json(200, json!({})),
    });
    let server = scripted(script).await;
    let mut f = fleet(&server, 100);
    // Result lines from the backlog whatever the wall clock says: the
    // query's splayed interval is at most 3,960 s (3,600 + 10 %), so a
    // 7,200 s window always holds one of its runs. (A 3,600 s window held
    // none when the clock fell between two runs of an interval over an
    // hour: then only the status POST came, and the test waited for a
    // second log POST that was an hour away.)
    f.backlog_secs = 7200;
    let agent = Agent::new(Machine::new(3, &OsMix::default(), 1), f.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(agent.clone().run(stop_rx));
    gatehouse_testkit::until("two log POSTs", Duration::from_secs(20), async || {
        count(&server.seen, "/o/log") >= 2
    })
    .await;
    assert_eq!(
        count(&server.seen, "/o/config"),
        2,
        "one implicit re-send, not a plugin retry storm"
    );
    let seen = server.seen.lock().map(|s| s.clone()).unwrap_or_default();
    let configs: Vec<&Seen> = seen.iter().filter(|x| x.path == "/o/config").collect();
    assert_eq!(configs[0].body, configs[1].body);
    // The re-send belongs to the transport, inside one request: the
    // config plugin saw one attempt that succeeded (a plugin retry would
    // count a second request and a transport error, after a back-off).
    let config = f
        .metrics
        .summary()
        .into_iter()
        .find(|e| e.endpoint == "config")
        .unwrap();
    assert_eq!(
        (config.requests, config.ok, config.transport_errors),
        (1, 1, 0),
        "re-sent by the transport, not retried by the plugin"
    );
    gatehouse_testkit::until("the buffer emptied", Duration::from_secs(20), async || {
        agent.buffered() == 0
    })
    .await;
    let _ = stop_tx.send(true);
    let _ = task.await;
}
