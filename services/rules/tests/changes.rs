//! A rule change is answered only once the engine re-read the rules: the
//! API waits for that answer, so lines acknowledged after it meet the new
//! rule (the engine's periodic re-read is an hour away here).

mod support;

use std::sync::Arc;
use std::time::Duration;

use gatehouse_bus::InProcBus;
use gatehouse_core::HostId;
use gatehouse_core::ports::{Bus, BusError, Store};
use gatehouse_proto::topics::RULES_CHANGED;
use gatehouse_rules::{Engine, RulesConfig};
use gatehouse_runtime::Shutdown;
use gatehouse_runtime::metrics::Metrics;
use gatehouse_store::EmbeddedStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_change_is_answered_once_the_engine_reread_the_rules() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path())?);
    let cfg = RulesConfig {
        refresh: Duration::from_secs(3600),
        ..RulesConfig::default()
    };
    let (engine, deliveries) = Engine::new(store.clone(), cfg, &Metrics::new())?;
    let bus: Arc<dyn Bus> = Arc::new(InProcBus::new());
    let shutdown = Shutdown::new();
    let running = tokio::spawn(gatehouse_rules::run(
        engine.clone(),
        deliveries,
        bus.clone(),
        shutdown.clone(),
    ));
    let ask = async || {
        bus.request(
            RULES_CHANGED.subject(),
            RULES_CHANGED.encode(&Default::default()),
            Duration::from_secs(5),
        )
        .await
    };
    // The engine listens once it started.
    gatehouse_testkit::eventually(
        "the engine answers",
        Duration::from_secs(10),
        async || match ask().await {
            Ok(_) => Ok(Some(())),
            Err(BusError::NoResponders(_)) => Ok(None),
            Err(e) => Err(e),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;

    store.put_rule(&support::nc_rule()).await?;
    ask().await?;
    // Right after the answer, a matching line fires.
    engine
        .on_results(&support::listening(
            &HostId::from_identity("hw:web-01"),
            "web-01",
        ))
        .await;
    let alerts = store.list_alerts(None, 10).await?;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule, "nc");

    shutdown.trigger();
    running.await?;
    Ok(())
}
