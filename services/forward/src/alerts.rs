//! Lines a destination missed (fallen out of the forward log's retention
//! before it read them) raised as an alert: stored with the rule engine's
//! alerts (`ctl alerts`, `GET /api/v1/alerts`; rule
//! `gatehouse:destination_missed_lines`, event `destination_missed`) and
//! forwarded to the destinations that take alerts. Its id is fixed by the
//! destination and the entries skipped, so raising it again (after a
//! crash) stores it once.

use std::sync::Arc;

use gatehouse_core::HostId;
use gatehouse_core::ports::{ForwardLog, Store};
use gatehouse_core::rules::Alert;

use crate::runner::MissedLines;

/// The alerts' rule name.
pub const RULE: &str = "gatehouse:destination_missed_lines";

/// Stores and forwards missed-lines alerts.
pub struct StoreAlerts {
    store: Arc<dyn Store>,
    forward: Arc<dyn ForwardLog>,
}

impl std::fmt::Debug for StoreAlerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreAlerts")
    }
}

impl StoreAlerts {
    pub fn new(store: Arc<dyn Store>, forward: Arc<dyn ForwardLog>) -> Self {
        Self { store, forward }
    }
}

#[async_trait::async_trait]
impl MissedLines for StoreAlerts {
    async fn missed(&self, destination: &str, lines: u64, range: (u64, u64), at_ms: i64) {
        let alert = Alert {
            id: format!("destination-missed-{destination}-{}-{}", range.0, range.1),
            at: at_ms,
            rule: RULE.into(),
            event: "destination_missed".into(),
            // Not a host's: the server's own.
            host_id: HostId::from_identity("gatehouse:forward"),
            hostname: "gatehouse".into(),
            summary: format!(
                "log destination {destination} missed {lines} lines: the forward log's retention dropped them before it read them"
            ),
            detail: serde_json::json!({
                "destination": destination,
                "lines": lines,
                "from_entry": range.0,
                "to_entry": range.1,
            }),
            actions: Vec::new(),
        };
        if let Err(e) = self.store.put_alert(&alert).await {
            tracing::error!(destination, error = %e, "missed-lines alert could not be stored");
        }
        let payload =
            gatehouse_bus::events::encode_forward_events("alert", std::slice::from_ref(&alert));
        if let Err(e) = self
            .forward
            .append(&format!("alert:{}", alert.id), 1, payload)
            .await
        {
            tracing::error!(destination, error = %e, "missed-lines alert not forwarded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{EmbeddedForwardLog, Retention};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missed_range_is_one_stored_and_forwarded_alert_however_often_raised() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(gatehouse_store::EmbeddedStore::open(&dir.path().join("store")).unwrap());
        let log = Arc::new(
            EmbeddedForwardLog::open(
                &dir.path().join("forward"),
                Retention::default(),
                gatehouse_core::time::system_clock(),
            )
            .unwrap(),
        );
        let a = StoreAlerts::new(store.clone(), log.clone());
        a.missed("siem", 1234, (7, 42), 1_000).await;
        // A crash before the cursor moved raises it again (the same range,
        // so the same time).
        a.missed("siem", 1234, (7, 42), 1_000).await;
        let alerts = store.list_alerts(None, 10).await.unwrap();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].rule, RULE);
        assert!(alerts[0].summary.contains("siem missed 1234 lines"));
        let entries = log.read(1, 10).await.unwrap();
        assert_eq!(entries.len(), 1, "forwarded once");
        let lines = crate::line::lines_of(entries[0].payload.clone()).unwrap();
        assert_eq!(lines[0].log_type, crate::line::LogType::Alerts);
        assert_eq!(lines[0].body["detail"]["lines"], 1234);
    }
}
