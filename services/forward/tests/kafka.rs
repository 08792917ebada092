//! The Kafka destination against a broker that speaks the Kafka wire
//! protocol itself (`support/kafka_broker.rs`), stood up from the protocol's
//! published message formats: ApiVersions v0 to v2 (v3 answered with
//! UNSUPPORTED_VERSION, as Kafka does), Metadata v1, Produce v3 with record
//! batches v2, plain or gzip. It checks what a broker would store: every
//! record once, its topic, its partition (the Java client's for the key),
//! key, value, headers, and `acks = -1`.
//!
//! And against a real Kafka-protocol broker when `GATEHOUSE_TEST_KAFKA`
//! names one: `tansu` (crates.io, a Kafka-compatible broker in Rust), which
//! `scripts/test.sh` starts when it is installed. It is not built by
//! default: 395 crates, about 20 minutes on two cores, too long for
//! every CI run. What neither shows: a real Kafka cluster's leader moves,
//! replication and SASL; those paths are the `rskafka` client's own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/kafka_broker.rs"]
mod kafka_broker;

use gatehouse_forward::destination::{DeliveryError, Destination};
use gatehouse_forward::kafka::{KafkaConfig, KafkaDestination, partition_of};
use gatehouse_forward::line::{Line, LogType};
use kafka_broker::broker;
use serde_json::json;

fn cfg(port: u16, topic: &str, gzip: bool) -> KafkaConfig {
    KafkaConfig {
        gzip,
        timeout_secs: 5,
        ..KafkaConfig::new(vec![format!("127.0.0.1:{port}")], topic)
    }
}

fn lines() -> Vec<Line> {
    let mut out = Vec::new();
    for h in 0..4 {
        for i in 0..5 {
            out.push(Line {
                log_type: LogType::Results,
                host_id: format!("host-{h}"),
                name: Some("pack/net/listening ports".into()),
                unix_time: 1_717_496_431,
                line_id: format!("r-{h}-{i}"),
                body: json!({"name": "listening_ports", "hostIdentifier": format!("h{h}"), "columns": {"port": i}})
                    .as_object()
                    .cloned()
                    .unwrap(),
            });
        }
        out.push(Line {
            log_type: LogType::Status,
            host_id: format!("host-{h}"),
            name: None,
            unix_time: 1_717_496_432,
            line_id: format!("s-{h}"),
            body: json!({"severity": "0", "message": "started"})
                .as_object()
                .cloned()
                .unwrap(),
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_land_keyed_by_host_in_the_java_clients_partition() {
    for gzip in [false, true] {
        let b = broker(&[("osquery_results", 3), ("osquery_status", 1)]).await;
        let d = KafkaDestination::new(cfg(b.port, "osquery_{log}", gzip)).unwrap();
        let sent = lines();
        d.deliver(&sent).await.unwrap();
        let stored = b.stored.lock().unwrap().clone();
        assert_eq!(stored.len(), sent.len(), "gzip {gzip}: every record once");
        for l in &sent {
            let s = stored
                .iter()
                .find(|s| s.headers["gatehouse-line-id"] == l.line_id.as_bytes())
                .expect("stored");
            let topic = format!("osquery_{}", l.log_type.as_str());
            let n = if l.log_type == LogType::Status { 1 } else { 3 };
            assert_eq!(s.topic, topic);
            assert_eq!(s.acks, -1, "all in-sync replicas");
            assert_eq!(s.key.as_deref(), Some(l.host_id.as_bytes()));
            assert_eq!(s.partition, partition_of(l.host_id.as_bytes(), n));
            assert_eq!(s.value, l.to_json(), "the line as the agent sent it");
            assert_eq!(s.headers["gatehouse-log"], l.log_type.as_str().as_bytes());
        }
        // The hosts spread over the partitions.
        let used: std::collections::BTreeSet<i32> = stored
            .iter()
            .filter(|s| s.topic == "osquery_results")
            .map(|s| s.partition)
            .collect();
        assert!(used.len() > 1, "{used:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_per_query_and_the_failures_say_what_to_do() {
    let b = broker(&[
        ("osq.pack_net_listening_ports", 2),
        ("osq.status", 1),
        ("too-large", 1),
    ])
    .await;
    let d = KafkaDestination::new(cfg(b.port, "osq.{query}", false)).unwrap();
    d.deliver(&lines()).await.unwrap();
    let topics: std::collections::BTreeSet<String> = b
        .stored
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.topic.clone())
        .collect();
    assert_eq!(
        topics.into_iter().collect::<Vec<_>>(),
        ["osq.pack_net_listening_ports", "osq.status"]
    );
    // A topic that does not exist: retried, and the error says so.
    let missing = KafkaDestination::new(cfg(b.port, "nope_{log}", false)).unwrap();
    let e = missing.deliver(&lines()[..1]).await.unwrap_err();
    assert!(
        matches!(&e, DeliveryError::Retry(m) if m.contains("nope_results does not exist")),
        "{e:?}"
    );
    // Refused for good by the broker: a dead letter, not a retry.
    let large = KafkaDestination::new(cfg(b.port, "too-large", false)).unwrap();
    let e = large.deliver(&lines()[..1]).await.unwrap_err();
    assert!(matches!(e, DeliveryError::Reject(_)), "{e:?}");
    // No broker: retried after the timeout.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = cfg(port, "t", false);
    c.timeout_secs = 1;
    let e = KafkaDestination::new(c)
        .unwrap()
        .deliver(&lines()[..1])
        .await
        .unwrap_err();
    assert!(matches!(e, DeliveryError::Retry(_)), "{e:?}");
}

/// The same against a real Kafka-protocol broker when
/// `GATEHOUSE_TEST_KAFKA` names one (`host:port`; `scripts/test.sh` starts
/// `tansu` when it is installed, see `docs/operations/destinations.md`):
/// topics created through the broker's admin API, records read back by a
/// consumer from each partition: every line once, in the Java client's
/// partition for its host, value and headers as sent, plain and gzip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_broker_holds_every_record_once_keyed_by_host() {
    use rskafka::client::ClientBuilder;
    use rskafka::client::partition::UnknownTopicHandling;
    let Ok(addr) = std::env::var("GATEHOUSE_TEST_KAFKA") else {
        eprintln!("NOT RUN: GATEHOUSE_TEST_KAFKA names no Kafka-protocol broker");
        return;
    };
    let client = ClientBuilder::new(vec![addr.clone()])
        .build()
        .await
        .unwrap();
    let run = std::process::id();
    for gzip in [false, true] {
        let prefix = format!("gatehouse_{run}_{gzip}");
        let partitions = [("results", 3), ("status", 1)];
        for (log, n) in partitions {
            client
                .controller_client()
                .unwrap()
                .create_topic(format!("{prefix}_{log}"), n, 1, 5_000)
                .await
                .unwrap();
        }
        let mut c = KafkaConfig::new(vec![addr.clone()], &format!("{prefix}_{{log}}"));
        c.gzip = gzip;
        c.timeout_secs = 10;
        let sent = lines();
        KafkaDestination::new(c)
            .unwrap()
            .deliver(&sent)
            .await
            .unwrap();

        let mut stored = Vec::new();
        for (log, n) in partitions {
            for p in 0..n {
                let pc = client
                    .partition_client(format!("{prefix}_{log}"), p, UnknownTopicHandling::Retry)
                    .await
                    .unwrap();
                let (records, _) = pc.fetch_records(0, 1..1_000_000, 1_000).await.unwrap();
                stored.extend(records.into_iter().map(|r| (log, p, r.record)));
            }
        }
        assert_eq!(stored.len(), sent.len(), "gzip {gzip}: every record once");
        for l in &sent {
            let (log, p, r) = stored
                .iter()
                .find(|(_, _, r)| r.headers["gatehouse-line-id"] == l.line_id.as_bytes())
                .expect("stored");
            let n = if l.log_type == LogType::Status { 1 } else { 3 };
            assert_eq!(*log, l.log_type.as_str());
            assert_eq!(*p, partition_of(l.host_id.as_bytes(), n));
            assert_eq!(r.key.as_deref(), Some(l.host_id.as_bytes()));
            assert_eq!(r.value.as_deref(), Some(l.to_json().as_slice()));
            assert_eq!(r.headers["gatehouse-log"], l.log_type.as_str().as_bytes());
        }
    }
}
