//! A result rule's alert names its host even when the line carries no
//! `hostname` decoration (osquery's defaults carry none): from the
//! enrolled host, else from the line's `hostIdentifier`.

mod support;

use std::sync::Arc;

use gatehouse_core::HostId;
use gatehouse_core::ports::{Fence, Store};
use gatehouse_rules::{Engine, RulesConfig};
use gatehouse_runtime::metrics::Metrics;
use gatehouse_store::EmbeddedStore;
use gatehouse_store::conformance::sample_host;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_alerts_name_the_host_without_decorations() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path())?);
    let enrolled = sample_host(1);
    store.put_host(&enrolled, Fence::NONE).await?;
    store.put_rule(&support::nc_rule()).await?;
    let (engine, _deliveries) =
        Engine::new(store.clone(), RulesConfig::default(), &Metrics::new())?;
    assert_eq!(engine.reload().await?, 1);

    // An enrolled host: its enrolled name.
    engine
        .on_results(&support::listening(&enrolled.id, "host-1"))
        .await;
    // A host the store does not know: the agent's identifier.
    let stranger = HostId::from_identity("hw:unknown");
    engine
        .on_results(&support::listening(&stranger, "laptop-7"))
        .await;

    let alerts = store.list_alerts(None, 10).await?;
    let name_of = |h: &HostId| {
        alerts
            .iter()
            .find(|a| &a.host_id == h)
            .map(|a| (a.hostname.clone(), a.summary.clone()))
    };
    let (name, summary) = name_of(&enrolled.id).unwrap_or_default();
    assert_eq!(name, "host-1.example.com");
    assert!(summary.ends_with("on host-1.example.com"), "{summary}");
    assert_eq!(name_of(&stranger).map(|a| a.0).as_deref(), Some("laptop-7"));
    Ok(())
}
