//! A webhook receiver for tests: records every POST (path, headers, body)
//! and answers 200, or 503 while `failing` is set, after a delay if one is
//! set (a slow receiver).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub alert_id: String,
    pub body: Value,
    /// The body's bytes as received (what a signature covers).
    pub raw: String,
    /// Every request header, names in lower case.
    pub headers: Vec<(String, String)>,
    /// Answered 200 (not 503 while failing).
    pub accepted: bool,
}

impl Hit {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Inner {
    hits: Mutex<Vec<Hit>>,
    failing: AtomicBool,
    /// How long each answer takes (a slow receiver), ms.
    delay_ms: std::sync::atomic::AtomicU64,
}

/// Runs until dropped.
pub struct WebhookReceiver {
    pub url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .fallback(
                |State(s): State<Arc<Inner>>, uri: Uri, headers: HeaderMap, body: String| async move {
                    let hit = Hit {
                        path: uri.path().to_owned(),
                        alert_id: headers
                            .get("x-gatehouse-alert-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned(),
                        body: serde_json::from_str(&body).unwrap_or(Value::Null),
                        headers: headers
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned())
                            })
                            .collect(),
                        raw: body,
                        accepted: !s.failing.load(Ordering::SeqCst),
                    };
                    let accepted = hit.accepted;
                    if let Ok(mut h) = s.hits.lock() {
                        h.push(hit);
                    }
                    let delay = s.delay_ms.load(Ordering::SeqCst);
                    if delay > 0 {
                        // A slow receiver: the answer takes this long.
                        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                    }
                    if accepted {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                },
            )
            .with_state(inner.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://127.0.0.1:{}", l.local_addr()?.port());
        let task = tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Ok(Self { url, inner, task })
    }

    /// Makes every answer take `ms` milliseconds.
    pub fn set_delay_ms(&self, ms: u64) {
        self.inner.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn set_failing(&self, failing: bool) {
        self.inner.failing.store(failing, Ordering::SeqCst);
    }

    /// Requests received on `path` so far.
    pub fn hits(&self, path: &str) -> Vec<Hit> {
        self.inner
            .hits
            .lock()
            .map(|h| h.iter().filter(|x| x.path == path).cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
