//! Readiness of one instance ([`Readiness`]): whether it drains, and the
//! last result of each dependency check (the store, the log stream), each
//! run on an interval by [`Readiness::watch`]. `/readyz` answers 503 while
//! it drains or any check fails, and names every check's state in its JSON
//! body; `gatehouse_ready` and `gatehouse_check_status{check}` carry the
//! same to Prometheus; each change of a check's state is logged once.
//!
//! A check is `Degraded` when the instance still serves but refuses part of
//! its work (log batches below the disk watermark, a full log stream): it
//! stays ready (taking it out of the load balancer would stop the work it
//! still does) and says so in the body, the metric and the log.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Metrics;

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Ok,
    /// Serving, but part of the work is refused; why.
    Degraded(String),
    /// Not serving; why.
    Failing(String),
}

impl Check {
    /// `gatehouse_check_status`'s value: 0 ok, 1 degraded, 2 failing.
    fn level(&self) -> i64 {
        match self {
            Check::Ok => 0,
            Check::Degraded(_) => 1,
            Check::Failing(_) => 2,
        }
    }

    fn describe(&self) -> String {
        match self {
            Check::Ok => "ok".into(),
            Check::Degraded(why) => format!("degraded: {why}"),
            Check::Failing(why) => format!("failing: {why}"),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabel {
    check: String,
}

/// An instance's readiness; clones share it.
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

struct Inner {
    draining: AtomicBool,
    checks: Mutex<BTreeMap<String, Check>>,
    ready: Gauge,
    status: Family<CheckLabel, Gauge>,
    /// Ready or not, for those who follow changes (gRPC health).
    changes: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("ready", &self.is_ready())
            .finish()
    }
}

/// What `/readyz` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ready: bool,
    pub draining: bool,
    /// Each check by name.
    pub checks: BTreeMap<String, Check>,
}

impl Readiness {
    /// Ready, with no checks yet; its gauges in `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        let r = Self {
            inner: Arc::new(Inner {
                draining: AtomicBool::new(false),
                checks: Mutex::new(BTreeMap::new()),
                ready: metrics.gauge(
                    "ready",
                    "1 while the instance is ready (not draining, no check failing)",
                ),
                status: metrics.get_or_register(
                    "check_status",
                    "Each readiness check: 0 ok, 1 degraded (part of the work refused), 2 failing",
                    Family::default,
                ),
                changes: tokio::sync::watch::Sender::new(true),
            }),
        };
        r.inner.ready.set(1);
        r
    }

    /// From now on unready: the instance drains.
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
        self.inner.ready.set(0);
        self.inner.changes.send_replace(false);
    }

    /// Whether it is ready, updated as that changes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.changes.subscribe()
    }

    /// Records a check's result; logs when its state changed.
    pub fn set(&self, name: &str, check: Check) {
        let Ok(mut checks) = self.inner.checks.lock() else {
            return;
        };
        self.inner
            .status
            .get_or_create(&CheckLabel {
                check: name.to_owned(),
            })
            .set(check.level());
        let before = checks.insert(name.to_owned(), check.clone());
        if before.as_ref() != Some(&check) {
            match &check {
                Check::Ok if before.is_some() => {
                    tracing::info!(check = name, "readiness check ok again")
                }
                Check::Ok => {}
                Check::Degraded(why) => {
                    tracing::warn!(check = name, reason = %why, "readiness check degraded")
                }
                Check::Failing(why) => {
                    tracing::error!(check = name, reason = %why, "readiness check failing: not ready")
                }
            }
        }
        let failing = checks.values().any(|c| matches!(c, Check::Failing(_)));
        drop(checks);
        let ready = !failing && !self.inner.draining.load(Ordering::Relaxed);
        self.inner.ready.set(i64::from(ready));
        self.inner
            .changes
            .send_if_modified(|r| std::mem::replace(r, ready) != ready);
    }

    /// Ready: not draining and no check failing.
    pub fn is_ready(&self) -> bool {
        self.report().ready
    }

    pub fn report(&self) -> Report {
        let checks = self
            .inner
            .checks
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        let draining = self.inner.draining.load(Ordering::Relaxed);
        let failing = checks.values().any(|c| matches!(c, Check::Failing(_)));
        Report {
            ready: !draining && !failing,
            draining,
            checks,
        }
    }

    /// Runs `check` now and then every `every` (each run bounded by
    /// `every` plus 5 s; a run that takes longer counts as failing), until
    /// every clone of this readiness is dropped (then at once: the check
    /// may hold what its instance closes, such as the store).
    pub fn watch<F, Fut>(&self, name: &'static str, every: Duration, check: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Check> + Send + 'static,
    {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let mut changes = self.inner.changes.subscribe();
        let bound = every + Duration::from_secs(5);
        let checks = async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let result = tokio::time::timeout(bound, check())
                    .await
                    .unwrap_or_else(|_| {
                        Check::Failing(format!("no answer within {} s", bound.as_secs()))
                    });
                let Some(inner) = weak.upgrade() else { return };
                Readiness { inner }.set(name, result);
            }
        };
        tokio::spawn(async move {
            // The sender lives in the shared state: it closes with the
            // last clone.
            let closed = async { while changes.changed().await.is_ok() {} };
            tokio::select! {
                () = closed => {}
                () = checks => {}
            }
        });
    }

    /// The `/readyz` answer: 200 when ready, else 503; the body names the
    /// state of each check.
    pub fn response(&self) -> Response {
        let r = self.report();
        let status = if r.draining {
            "draining"
        } else if r.ready {
            "ready"
        } else {
            "unready"
        };
        let checks: serde_json::Map<String, serde_json::Value> = r
            .checks
            .iter()
            .map(|(k, c)| (k.clone(), serde_json::Value::String(c.describe())))
            .collect();
        let body = serde_json::json!({"status": status, "checks": checks});
        let code = if r.ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (code, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_check_makes_the_instance_unready_until_it_passes() {
        let m = Metrics::new();
        let r = Readiness::new(&m);
        assert!(r.is_ready());
        r.set("store", Check::Degraded("log batches refused".into()));
        assert!(r.is_ready(), "degraded still serves");
        r.set(
            "store",
            Check::Failing("disk full at /d: 0 bytes free".into()),
        );
        assert!(!r.is_ready());
        let text = m.render();
        assert!(text.contains("gatehouse_ready 0"), "{text}");
        assert!(
            text.contains("gatehouse_check_status{check=\"store\"} 2"),
            "{text}"
        );
        let resp = r.response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        r.set("store", Check::Ok);
        assert!(r.is_ready());
        assert!(m.render().contains("gatehouse_ready 1"));
        r.drain();
        assert!(!r.is_ready());
        assert!(r.report().draining);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watched_check_is_rerun_on_its_interval() {
        let r = Readiness::new(&Metrics::new());
        let state = Arc::new(Mutex::new(Check::Ok));
        let s = state.clone();
        r.watch("store", Duration::from_secs(2), move || {
            let c = s.lock().map(|c| c.clone()).unwrap_or(Check::Ok);
            async move { c }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(r.is_ready());
        *state.lock().unwrap() = Check::Failing("unreachable".into());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!r.is_ready());
        assert_eq!(
            r.report().checks.get("store"),
            Some(&Check::Failing("unreachable".into()))
        );
        *state.lock().unwrap() = Check::Ok;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(r.is_ready());
        // The last clone dropped: the check (and what it holds) goes at
        // once, not at its next run.
        assert_eq!(Arc::strong_count(&state), 2);
        drop(r);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(Arc::strong_count(&state), 1);
    }
}
