//! Webhook delivery: one POST of an alert as JSON, and the retry loop with
//! exponential back-off around it. A 2xx answer is delivered; anything
//! else (another status, a timeout, a refused connection) is retried
//! until the attempts run out.

use std::path::Path;
use std::time::{Duration, Instant};

use gatehouse_core::rules::{Alert, Hook};
use gatehouse_runtime::Shutdown;

use crate::{RulesConfig, RulesError, delivery};

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    Yes,
    /// Every attempt failed.
    GaveUp,
    /// The process is stopping; the delivery stays pending.
    Stopped,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: Delivered,
    pub attempts: u32,
    /// The last failure, if any.
    pub error: Option<String>,
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`, as receivers
/// check it (`x-gatehouse-signature`).
pub use gatehouse_core::ids::hmac_sha256 as signature;

/// An HTTP client for webhook receivers: the system's CAs plus any given.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    metrics: crate::metrics::Metrics,
}

#[async_trait::async_trait]
impl gatehouse_core::rules::WebhookSender for WebhookClient {
    async fn send(&self, hook: Hook<'_>, alert: &Alert) -> Result<(), String> {
        self.post(hook, alert).await
    }
}

impl WebhookClient {
    pub fn new(
        timeout: Duration,
        extra_ca: Option<&Path>,
        metrics: &gatehouse_runtime::metrics::Metrics,
    ) -> Result<Self, RulesError> {
        let tls = gatehouse_runtime::tls::client_config(extra_ca).map_err(RulesError::Client)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RulesError::Client(e.to_string()))?;
        Ok(Self {
            http,
            metrics: crate::metrics::Metrics::new(metrics),
        })
    }

    /// One POST of `alert` to `hook`: its extra headers, and its
    /// signature when it has a secret.
    pub async fn post(&self, hook: Hook<'_>, alert: &Alert) -> Result<(), String> {
        let started = Instant::now();
        let body = serde_json::to_vec(alert).map_err(|e| e.to_string())?;
        let mut req = self
            .http
            .post(hook.url)
            .header("content-type", "application/json")
            .header("x-gatehouse-alert-id", &alert.id)
            .header("x-gatehouse-rule", &alert.rule);
        for (k, v) in hook.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(secret) = hook.secret {
            req = req.header("x-gatehouse-signature", signature(secret, &body));
        }
        let r = req.body(body).send().await;
        self.metrics
            .delivery_seconds
            .observe(started.elapsed().as_secs_f64());
        match r {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("receiver answered {}", resp.status())),
            // The error's chain without the URL (it may hold a secret).
            Err(e) => Err(describe(&e)),
        }
    }

    /// Posts with retries: `cfg.webhook_attempts` attempts, waiting
    /// `webhook_backoff`, doubled after each failure (at most a minute).
    pub async fn deliver_with_retries(
        &self,
        hook: Hook<'_>,
        alert: &Alert,
        cfg: &RulesConfig,
        shutdown: &Shutdown,
    ) -> Outcome {
        let mut wait = cfg.webhook_backoff;
        let mut error = None;
        let attempts = cfg.webhook_attempts.max(1);
        for attempt in 1..=attempts {
            match self.post(hook, alert).await {
                Ok(()) => {
                    self.metrics
                        .deliveries
                        .get_or_create(&delivery("webhook", "delivered"))
                        .inc();
                    return Outcome {
                        result: Delivered::Yes,
                        attempts: attempt,
                        error,
                    };
                }
                Err(e) => {
                    tracing::info!(alert = %alert.id, attempt, error = %e, "webhook attempt failed");
                    error = Some(e);
                }
            }
            if attempt == attempts {
                break;
            }
            self.metrics
                .deliveries
                .get_or_create(&delivery("webhook", "retried"))
                .inc();
            tokio::select! {
                _ = shutdown.wait() => {
                    return Outcome { result: Delivered::Stopped, attempts: attempt, error };
                }
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(60));
        }
        self.metrics
            .deliveries
            .get_or_create(&delivery("webhook", "dead"))
            .inc();
        tracing::warn!(alert = %alert.id, rule = %alert.rule, attempts, "webhook gave up; moved to the dead letters");
        Outcome {
            result: Delivered::GaveUp,
            attempts,
            error,
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {detail}")
    }
}
