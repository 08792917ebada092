//! The all-in-one's sink over a real embedded store and a real forward
//! log: batches reach the forward log only while a destination is defined.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gatehouse_core::HostId;
use gatehouse_core::ports::{Forwarding, LogSink, Store};
use gatehouse_core::time::system_clock;
use gatehouse_forward::log::{EmbeddedForwardLog, Retention};
use gatehouse_ingest::{DirectSink, IngestConfig};
use gatehouse_store::EmbeddedStore;
use gatehouse_store::conformance::processes_post;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("call failed: {e}"),
    }
}

#[tokio::test]
async fn batches_reach_the_forward_log_only_while_a_destination_is_defined() {
    let dir = ok(tempfile::tempdir());
    let store: Arc<dyn Store> = Arc::new(ok(EmbeddedStore::open(&dir.path().join("store"))));
    let log = Arc::new(ok(EmbeddedForwardLog::open(
        &dir.path().join("forward"),
        Retention::default(),
        system_clock(),
    )));
    let active = Arc::new(AtomicBool::new(false));
    let sink = DirectSink::new(store.clone(), &IngestConfig::default()).with_forward(Forwarding {
        log: log.clone(),
        active: active.clone(),
    });
    let host = HostId::from_identity("forward-or-not");
    let now = gatehouse_core::time::now_ms();

    ok(sink.append(processes_post(&host, 1, 5, now)).await);
    let bounds = ok(gatehouse_core::ports::ForwardLog::bounds(&*log).await);
    assert_eq!(
        bounds.next_line, 0,
        "no destination: nothing appended ({bounds:?})"
    );

    active.store(true, Ordering::Relaxed);
    ok(sink.append(processes_post(&host, 2, 5, now)).await);
    let bounds = ok(gatehouse_core::ports::ForwardLog::bounds(&*log).await);
    assert_eq!(
        bounds.next_line, 5,
        "a destination: the batch's 5 lines appended"
    );
}
