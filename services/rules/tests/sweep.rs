//! The host sweep against a real embedded store: a silent host fires once
//! per silence (again only after it checked in and went silent anew), a
//! host still on an old config generation `after_secs` after a newer one
//! appeared fires once per generation, label scopes apply, and disabled
//! rules never fire.

use std::sync::Arc;

use gatehouse_core::ports::{Fence, Store};
use gatehouse_core::rules::{Action, Rule, Trigger};
use gatehouse_rules::{Engine, RulesConfig};
use gatehouse_runtime::metrics::Metrics;
use gatehouse_store::EmbeddedStore;
use gatehouse_store::conformance::sample_host;

fn rule(name: &str, when: Trigger) -> Rule {
    Rule {
        name: name.into(),
        description: String::new(),
        enabled: true,
        when,
        actions: vec![Action::Log],
        throttle_secs: 0,
        updated_at: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_drifting_hosts_fire_once_each() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path())?);
    let now: i64 = 1_800_000_000_000;
    let min = 60_000;
    // h1: silent 30 min, label prod. h2: silent 30 min, no label.
    // h3: online, on generation 0.
    let mut h1 = sample_host(1);
    h1.labels = vec!["prod".into()];
    h1.last_seen = now - 30 * min;
    let mut h2 = sample_host(2);
    h2.last_seen = now - 30 * min;
    let mut h3 = sample_host(3);
    h3.last_seen = now - min;
    h3.config_generation = 0;
    for h in [&h1, &h2, &h3] {
        store.put_host(h, Fence::NONE).await?;
    }
    let silent = |after_secs, labels: &[&str]| Trigger::HostSilent {
        after_secs,
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
    };
    store
        .put_rule(&rule("prod-silent", silent(600, &["prod"])))
        .await?;
    store
        .put_rule(&rule("any-silent-a-day", silent(86_400, &[])))
        .await?;
    let mut off = rule("disabled", silent(60, &[]));
    off.enabled = false;
    store.put_rule(&off).await?;
    store
        .put_rule(&rule(
            "drift",
            Trigger::ConfigDrift {
                after_secs: 600,
                labels: vec![],
            },
        ))
        .await?;

    let (engine, _deliveries) =
        Engine::new(store.clone(), RulesConfig::default(), &Metrics::new())?;
    assert_eq!(engine.reload().await?, 4);

    // Generation 0 everywhere: no drift; only h1 is silent for prod-silent.
    let r = engine.sweep(now).await?;
    assert_eq!((r.hosts, r.fired), (3, 1));
    let alerts = store.list_alerts(None, 10).await?;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].rule, "prod-silent");
    assert_eq!(alerts[0].host_id, h1.id);
    assert_eq!(
        alerts[0].at,
        h1.last_seen + 600_000,
        "when it became silent"
    );
    assert_eq!(
        alerts[0].actions[0].state,
        gatehouse_core::rules::ActionState::Delivered,
        "log action"
    );
    // The same silence does not fire again, from this engine or a fresh one.
    assert_eq!(engine.sweep(now + min).await?.fired, 0);
    let (other, _d) = Engine::new(store.clone(), RulesConfig::default(), &Metrics::new())?;
    other.reload().await?;
    assert_eq!(other.sweep(now + 2 * min).await?.fired, 0);
    // h1 checks in, then goes silent again: a new silence, a new alert.
    store.touch_host(&h1.id, now + 5 * min, Fence::NONE).await?;
    assert_eq!(engine.sweep(now + 10 * min).await?.fired, 0);
    assert_eq!(engine.sweep(now + 20 * min).await?.fired, 1);

    // A new config generation: h3 (online, still on 0) drifts once the
    // generation is older than after_secs; h1/h2 are offline, not drifting.
    store.bump_config_generation().await?;
    let t = now + 30 * min;
    store.touch_host(&h3.id, t, Fence::NONE).await?;
    assert_eq!(engine.sweep(t).await?.fired, 0, "generation just seen");
    store.touch_host(&h3.id, t + 11 * min, Fence::NONE).await?;
    let r = engine.sweep(t + 11 * min).await?;
    assert_eq!(r.fired, 1);
    let drift: Vec<_> = store
        .list_alerts(None, 10)
        .await?
        .into_iter()
        .filter(|a| a.rule == "drift")
        .collect();
    assert_eq!(drift.len(), 1);
    assert_eq!(drift[0].host_id, h3.id);
    assert_eq!(drift[0].detail["current_generation"], 1);
    store.touch_host(&h3.id, t + 12 * min, Fence::NONE).await?;
    assert_eq!(
        engine.sweep(t + 12 * min).await?.fired,
        0,
        "once per generation"
    );
    // Nothing fired for the disabled rule.
    assert!(
        store
            .list_alerts(None, 100)
            .await?
            .iter()
            .all(|a| a.rule != "disabled")
    );
    Ok(())
}
