//! The rule engine's metrics (one set per instance).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub rule: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub action: String,
    pub outcome: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub evaluations: Family<EventLabel, Counter>,
    pub alerts: Family<AlertLabels, Counter>,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub delivery_seconds: Histogram,
    pub pending: Gauge,
    pub loaded: Gauge,
    pub enabled: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("rules::Metrics")
    }
}

impl Metrics {
    /// The rule engine's families in `m` (shared by every engine and
    /// webhook client of that instance).
    pub fn new(m: &gatehouse_runtime::metrics::Metrics) -> Self {
        Self {
            evaluations: m.get_or_register(
                "rule_evaluations",
                "Rule evaluations by event (results: one per rule and row)",
                Family::default,
            ),
            alerts: m.get_or_register(
                "alerts",
                "Alerts by rule and outcome (fired, duplicate, suppressed, store_failed)",
                Family::default,
            ),
            deliveries: m.get_or_register(
                "alert_deliveries",
                "Alert action deliveries by action and outcome (delivered, retried, dead)",
                Family::default,
            ),
            delivery_seconds: m.get_or_register(
                "alert_delivery_seconds",
                "Duration of one webhook attempt",
                || Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            ),
            pending: m.gauge(
                "alert_deliveries_pending",
                "Alerts with webhooks waiting to be delivered",
            ),
            loaded: m.gauge("rules_loaded", "Rules loaded by the engine"),
            enabled: m.gauge("rules_enabled", "Loaded rules that are enabled (evaluated)"),
        }
    }
}
