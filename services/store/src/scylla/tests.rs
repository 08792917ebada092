//! Tests of the ScyllaDB adapter against real CQL servers.
//!
//! - Always: the conformance suite against kassandra, an in-process CQL
//!   server the driver talks to over TCP ([`crate::cql_test_server`]).
//!   Checks that need semantics kassandra lacks are listed as not run.
//! - `real_*` tests: against the ScyllaDB node named by
//!   `GATEHOUSE_TEST_SCYLLA` (`host:port`). They are `#[ignore]`d, so a
//!   plain `cargo test` reports them as ignored, never as passed;
//!   `scripts/test.sh` runs them with `--ignored` when the variable is set.

use super::*;
use crate::conformance::{Fencing, Semantics, run_all};
use crate::cql_test_server::CqlTestServer;
use gatehouse_core::ports::stores::*;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    // Display, not Debug: the error says what failed in words.
    match r {
        Ok(v) => v,
        Err(e) => panic!("call failed: {e}"),
    }
}

/// kassandra executes neither clustering ranges nor conditional writes,
/// and ignores TTLs; the adapter keeps results per host by design.
const KASSANDRA: Semantics = Semantics {
    clustering_ranges: false,
    conditional_writes: false,
    explicit_purge: false,
    fleet_wide_results: false,
    fencing: Fencing::NotChecked,
};

fn test_config(contact: String, keyspace: &str) -> ScyllaConfig {
    ScyllaConfig {
        contact_points: vec![contact],
        keyspace: keyspace.into(),
        await_schema_agreement: false,
        ..Default::default()
    }
}

/// Each conformance check against its own CQL server.
mod conformance {
    use super::*;

    async fn fresh() -> (CqlTestServer, Arc<dyn gatehouse_core::ports::Store>) {
        let server = ok(CqlTestServer::start().await);
        let store = ok(ScyllaStore::connect(&test_config(server.addr().to_string(), "gh")).await);
        (server, Arc::new(store))
    }

    crate::conformance_tests!(fresh, KASSANDRA);
}

/// What kassandra cannot run, in all: exactly the checks that need what it
/// lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kassandra_skips_exactly_what_it_cannot_run() {
    let server = ok(CqlTestServer::start().await);
    let store = ok(ScyllaStore::connect(&test_config(server.addr().to_string(), "gh")).await);
    let report = run_all(&store, KASSANDRA).await;
    println!("{report}");
    assert_eq!(
        report.not_run.len(),
        9,
        "exactly the checks that need ranges, conditional writes, purge, fleet-wide search and write timestamps are skipped: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_and_restart_finds_the_data() {
    let server = ok(CqlTestServer::start().await);
    let cfg = test_config(server.addr().to_string(), "gh");
    let host = crate::conformance::sample_host(7);
    {
        let store = ok(ScyllaStore::connect(&cfg).await);
        ok(store.put_host(&host, Fence::NONE).await);
    }
    // A second process (or a restart) finds the schema recorded and the
    // data in place.
    let (a, b) = tokio::join!(ScyllaStore::connect(&cfg), ScyllaStore::connect(&cfg));
    let (a, b) = (ok(a), ok(b));
    assert_eq!(ok(a.get_host(&host.id).await), Some(host.clone()));
    assert_eq!(ok(b.get_host(&host.id).await), Some(host));
    let session = &a.inner.session;
    let versions = ok(ok(session
        .query_unpaged(
            "SELECT version FROM gh.schema_migrations WHERE scope = ?",
            ("gatehouse",),
        )
        .await)
    .into_rows_result())
    .rows_num();
    assert_eq!(versions, schema::MIGRATIONS.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_carve_blocks_are_chunked_and_reassembled() {
    let server = ok(CqlTestServer::start().await);
    let store = ok(ScyllaStore::connect(&test_config(server.addr().to_string(), "gh")).await);
    let s = CarveSession {
        session_id: "big".into(),
        host_id: HostId::from_identity("hw:big"),
        carve_id: "c".into(),
        request_id: "r".into(),
        block_count: 2,
        block_size: 1_300_000,
        carve_size: 1_300_001,
        blocks_received: 0,
        state: gatehouse_core::model::CarveState::Receiving,
        created_at: 5,
        completed_at: None,
        sha256: None,
        format: None,
    };
    ok(store.create_carve(&s).await);
    let block: Vec<u8> = (0..1_300_000u32).map(|n| (n % 251) as u8).collect();
    let o = ok(store.put_carve_block("big", 0, &block).await);
    assert_eq!((o.blocks_received, o.new_block), (1, true));
    let o = ok(store.put_carve_block("big", 1, b"z").await);
    assert_eq!(o.blocks_received, 2);
    assert_eq!(
        ok(store.get_carve_block("big", 0).await).as_deref(),
        Some(&block[..])
    );
    assert!(ok(store.get_carve_block("big", 9).await).is_none());
    // 1.3 MB is three chunk rows, not one large cell.
    let rows = ok(ok(store
        .inner
        .session
        .query_unpaged(
            "SELECT chunk FROM gh.carve_blocks WHERE session_id = ? AND block_id = ?",
            ("big", 0i64),
        )
        .await)
    .into_rows_result())
    .rows_num();
    assert_eq!(rows, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_client_answers_busy_instead_of_queueing_forever() {
    let server = ok(CqlTestServer::start().await);
    let cfg = ScyllaConfig {
        max_in_flight: 1,
        queue_timeout_ms: 50,
        ..test_config(server.addr().to_string(), "gh")
    };
    let store = ok(ScyllaStore::connect(&cfg).await);
    let held = ok(store.inner.permits.acquire().await);
    assert!(matches!(store.get_meta("k").await, Err(StoreError::Busy)));
    drop(held);
    assert!(ok(store.get_meta("k").await).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_campaign_spreads_over_bounded_partitions() {
    let server = ok(CqlTestServer::start().await);
    let store = ok(ScyllaStore::connect(&test_config(server.addr().to_string(), "gh")).await);
    let targets: Vec<HostId> = (0..5_000)
        .map(|n| HostId::from_identity(&format!("hw:fleet-{n}")))
        .collect();
    let c = Campaign {
        id: "big".into(),
        sql: "SELECT 1".into(),
        targets: Default::default(),
        target_count: targets.len() as u64,
        created_at: 1,
        expires_at: i64::MAX,
        created_by: "t".into(),
        cancelled_at: None,
        cancelled_by: None,
    };
    ok(store.create_campaign(&c, &targets).await);
    assert_eq!(campaign_buckets(5_000), 4);
    let mut per_bucket = [0usize; 4];
    for b in 0..4i32 {
        per_bucket[b as usize] = ok(store
            .inner
            .rows::<(Vec<u8>,)>(Q::DeliveriesInBucket, ("big", b), usize::MAX)
            .await)
        .len();
    }
    assert_eq!(per_bucket.iter().sum::<usize>(), 5_000);
    assert!(
        per_bucket.iter().all(|n| (1_000..1_500).contains(n)),
        "{per_bucket:?}"
    );
    assert_eq!(ok(store.list_deliveries("big").await).len(), 5_000);
    assert_eq!(ok(store.open_deliveries(&targets[17]).await).len(), 1);
}

/// A CA and a server certificate for 127.0.0.1, as PEM files in `dir`.
fn test_pki(dir: &std::path::Path) -> (std::path::PathBuf, Arc<rustls::ServerConfig>) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use rustls_pki_types::PrivateKeyDer;
    let ca_key = ok(KeyPair::generate());
    let mut ca = ok(CertificateParams::new(Vec::<String>::new()));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "test ScyllaDB CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ok(ca.self_signed(&ca_key));
    let ca_path = dir.join("scylla-ca.pem");
    ok(std::fs::write(&ca_path, ca_cert.pem()));
    let issuer = Issuer::new(ca, ca_key);
    let node_key = ok(KeyPair::generate());
    let mut node = ok(CertificateParams::new(vec!["127.0.0.1".to_owned()]));
    node.distinguished_name
        .push(DnType::CommonName, "scylla-node-1");
    let node = ok(node.signed_by(&node_key, &issuer));
    let key = PrivateKeyDer::try_from(node_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server =
        ok(ok(rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions())
        .with_no_client_auth()
        .with_single_cert(vec![node.der().clone()], key));
    (ca_path, Arc::new(server))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_cluster_verifies_the_node_certificate() {
    let dir = ok(tempfile::tempdir());
    let (ca_path, server_tls) = test_pki(dir.path());
    let server = ok(CqlTestServer::start_with(Some(server_tls)).await);
    let mut cfg = test_config(server.addr().to_string(), "gh");
    cfg.tls = Some(config::ScyllaTls {
        ca_file: ca_path,
        cert_file: None,
        key_file: None,
    });
    let store = ok(ScyllaStore::connect(&cfg).await);
    let host = crate::conformance::sample_host(3);
    ok(store.put_host(&host, Fence::NONE).await);
    assert_eq!(ok(store.get_host(&host.id).await), Some(host));

    // A CA that did not sign the node's certificate: no connection.
    let other = ok(tempfile::tempdir());
    let (other_ca, _) = test_pki(other.path());
    cfg.tls = Some(config::ScyllaTls {
        ca_file: other_ca,
        cert_file: None,
        key_file: None,
    });
    cfg.request_timeout_ms = 2_000;
    assert!(ScyllaStore::connect(&cfg).await.is_err());
    // Without TLS against a TLS node: no connection either.
    cfg.tls = None;
    assert!(ScyllaStore::connect(&cfg).await.is_err());
    // A CA file that is not PEM is a configuration error, named.
    let junk = dir.path().join("junk.pem");
    ok(std::fs::write(&junk, "not a certificate"));
    cfg.tls = Some(config::ScyllaTls {
        ca_file: junk,
        cert_file: None,
        key_file: None,
    });
    let e = ScyllaStore::connect(&cfg)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("store.scylla.tls"), "{e}");
}

#[test]
fn campaign_buckets_grow_with_the_fleet() {
    assert_eq!(campaign_buckets(0), 1);
    assert_eq!(campaign_buckets(2_000), 1);
    assert_eq!(campaign_buckets(2_001), 2);
    assert_eq!(campaign_buckets(100_000), 64);
    assert_eq!(campaign_buckets(1_000_000), 512);
    assert_eq!(campaign_buckets(100_000_000), 1_024);
}

#[test]
fn newest_first_keys_sort_ascending() {
    let (m1, k1) = recent_keys(1_000);
    let (m2, k2) = recent_keys(2_000);
    assert_eq!(m1, m2);
    assert!(k2 < k1, "the newer campaign sorts first");
    assert_eq!(
        cursor_decode(&cursor_encode(&[0, 7, 255])),
        Some(vec![0, 7, 255])
    );
    assert_eq!(cursor_decode("zz"), None);
}

// ---- against a real ScyllaDB node ----------------------------------------

fn real_node() -> String {
    std::env::var("GATEHOUSE_TEST_SCYLLA").unwrap_or_else(|_| {
        panic!("GATEHOUSE_TEST_SCYLLA is unset: these tests need a real ScyllaDB node (host:port)")
    })
}

fn fresh_keyspace() -> String {
    format!("gh_test_{}", fastrand::u64(..))
}

fn real_config() -> ScyllaConfig {
    ScyllaConfig {
        contact_points: vec![real_node()],
        keyspace: fresh_keyspace(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real ScyllaDB node: set GATEHOUSE_TEST_SCYLLA=host:port"]
async fn real_conformance_with_ranges_and_conditional_writes() {
    let store = ok(ScyllaStore::connect(&real_config()).await);
    let report = run_all(
        &store,
        Semantics {
            clustering_ranges: true,
            conditional_writes: true,
            explicit_purge: false,
            fleet_wide_results: false,
            fencing: Fencing::Supersedes,
        },
    )
    .await;
    println!("{report}");
    assert_eq!(
        report.not_run.len(),
        2,
        "only purge (TTL store) and fleet-wide search (per-host store): {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real ScyllaDB node: set GATEHOUSE_TEST_SCYLLA=host:port"]
async fn real_concurrent_migrations_and_generation_bumps() {
    let cfg = real_config();
    let (a, b, c) = tokio::join!(
        ScyllaStore::connect(&cfg),
        ScyllaStore::connect(&cfg),
        ScyllaStore::connect(&cfg)
    );
    let stores = [ok(a), ok(b), ok(c)];
    // 30 concurrent bumps from three processes yield 30 distinct values.
    let mut handles = Vec::new();
    for n in 0..30 {
        let s = stores[n % 3].clone();
        handles.push(tokio::spawn(
            async move { s.bump_config_generation().await },
        ));
    }
    let mut got = Vec::new();
    for h in handles {
        got.push(ok(ok(h.await)));
    }
    got.sort_unstable();
    assert_eq!(got, (1..=30).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real ScyllaDB node: set GATEHOUSE_TEST_SCYLLA=host:port"]
async fn real_log_lines_expire_by_table_ttl() {
    let cfg = real_config();
    let store = ok(ScyllaStore::connect(&cfg).await);
    for t in schema::LOG_TABLES {
        ok(store
            .inner
            .session
            .query_unpaged(
                format!(
                    "ALTER TABLE {}.{t} WITH default_time_to_live = 2",
                    cfg.keyspace
                ),
                (),
            )
            .await);
    }
    let host = HostId::from_identity("hw:ttl");
    let now = gatehouse_core::time::now_ms();
    let line = ResultLog {
        host_id: host.clone(),
        name: "users".into(),
        unix_time: now / 1000,
        kind: gatehouse_core::model::ResultKind::Event,
        action: "added".into(),
        rows: 1,
        line_id: "l-0".into(),
        received_at: now,
        line: serde_json::json!({"name": "users"}).into(),
    };
    ok(store.append_logs(&LogRecords::Results(vec![line])).await);
    let f = ResultFilter {
        host_id: Some(host),
        name: None,
        since: 0,
        until: i64::MAX,
        limit: 10,
        ..Default::default()
    };
    assert_eq!(ok(store.query_results(&f).await).len(), 1);
    // The table's TTL is 2 s: the server drops the line by itself.
    gatehouse_testkit::until("the line expired", Duration::from_secs(15), async || {
        ok(store.query_results(&f).await).is_empty()
    })
    .await;
}

#[test]
fn fenced_timestamps_order_by_token_then_issue_and_beat_the_wall_clock() {
    assert_eq!(ok(fenced_timestamp(Fence::NONE, 5)), None);
    assert_eq!(
        ok(fenced_timestamp(Fence(3), 2)),
        Some((1i64 << 61) + (3 << 20) + 2)
    );
    // Every write with token 7 sorts below every write with token 8 ...
    let last7 = ok(fenced_timestamp(Fence(7), (1 << 20) - 1));
    let first8 = ok(fenced_timestamp(Fence(8), 0));
    assert!(last7 < first8);
    // ... the issue order wraps within a token, never into the next ...
    assert_eq!(
        ok(fenced_timestamp(Fence(7), 1 << 20)),
        ok(fenced_timestamp(Fence(7), 0))
    );
    // ... and above any wall-clock write (microseconds in the year 3000).
    assert!(first8.is_some_and(|t| t > 32_503_680_000_000_000));
    assert!(matches!(
        fenced_timestamp(Fence(u64::MAX), 0),
        Err(StoreError::Invalid(_))
    ));
}
