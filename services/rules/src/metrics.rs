//! The rule engine's metrics (one set per process).

use std::sync::OnceLock;

use gatehouse_runtime::metrics::register;
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
}

pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let m = Metrics {
            evaluations: Family::default(),
            alerts: Family::default(),
            deliveries: Family::default(),
            delivery_seconds: Histogram::new([
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            pending: Gauge::default(),
            loaded: Gauge::default(),
        };
        register(
            "rule_evaluations",
            "Rule evaluations by event (results: one per rule and row)",
            &m.evaluations,
        );
        register(
            "alerts",
            "Alerts by rule and outcome (fired, duplicate, suppressed, store_failed)",
            &m.alerts,
        );
        register(
            "alert_deliveries",
            "Alert action deliveries by action and outcome (delivered, retried, dead)",
            &m.deliveries,
        );
        register(
            "alert_delivery_seconds",
            "Duration of one webhook attempt",
            &m.delivery_seconds,
        );
        register(
            "alert_deliveries_pending",
            "Alerts with webhooks waiting to be delivered",
            &m.pending,
        );
        register("rules_loaded", "Rules loaded by the engine", &m.loaded);
        m
    })
}
