//! HTTP destinations, one client each (the system's CAs plus a custom
//! one, a timeout, optional gzip):
//!
//! - **Splunk HEC** (`kind = "splunk_hec"`): `POST URL/services/collector/event`
//!   with `Authorization: Splunk TOKEN`; one event object per line
//!   (`time`, `host`, `source`, `sourcetype`, `index`, `event`: the line),
//!   concatenated.
//! - **Elasticsearch / OpenSearch `_bulk`** (`kind = "elasticsearch"`):
//!   `POST URL/_bulk`, NDJSON `create` actions with the line's id as `_id`
//!   (a re-sent line is a 409, counted as delivered: stored once), into an
//!   index named from a pattern with the line's UTC date
//!   (`osquery-{date}` → `osquery-2026.12.04`); `ApiKey` or basic auth.
//!   Item failures: 429 and 5xx retry the batch, others reject it.
//! - **Webhook** (`kind = "webhook"`): `POST URL` with a JSON array of the
//!   lines, custom headers, and `x-gatehouse-signature: sha256=HMAC` of the
//!   body when a secret is set.
//!
//! 429, 5xx and transport errors retry with back-off; any other 4xx is a
//! rejection (dead letter with the receiver's answer).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::destination::{DeliveryError, Destination};
use crate::line::{Line, LogType};

fn default_timeout() -> u64 {
    30
}

/// How every HTTP destination's client is made. (Each kind's table lists
/// `gzip`, `ca` and `timeout_secs` itself: serde cannot flatten a shared
/// struct into one that refuses unknown keys.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HttpCommon<'a> {
    ca: Option<&'a std::path::Path>,
    timeout_secs: u64,
}

/// `kind = "splunk_hec"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HecConfig {
    /// The collector's base URL (`https://splunk:8088`).
    pub url: String,
    /// The HEC token (or `token_file`).
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub index: Option<String>,
    /// Default `osquery:results` / `osquery:status`.
    #[serde(default)]
    pub sourcetype: Option<String>,
    /// Default `gatehouse`.
    #[serde(default)]
    pub source: Option<String>,
    /// Gzip request bodies (`Content-Encoding: gzip`).
    #[serde(default)]
    pub gzip: bool,
    /// A PEM CA bundle trusted besides the system's.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

/// `kind = "elasticsearch"` (also OpenSearch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkConfig {
    /// The cluster's base URL (`https://es:9200`).
    pub url: String,
    /// The index, `{date}` replaced by the line's UTC date (`YYYY.MM.DD`)
    /// and `{log}` by `results` or `status`.
    #[serde(default = "default_index")]
    pub index: String,
    /// `Authorization: ApiKey ...` (or `api_key_file`).
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Gzip request bodies (`Content-Encoding: gzip`).
    #[serde(default)]
    pub gzip: bool,
    /// A PEM CA bundle trusted besides the system's.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_index() -> String {
    "osquery-{log}-{date}".into()
}

/// `kind = "webhook"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// HMAC-SHA256 key of `x-gatehouse-signature` (or `secret_file`).
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Gzip request bodies (`Content-Encoding: gzip`).
    #[serde(default)]
    pub gzip: bool,
    /// A PEM CA bundle trusted besides the system's.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

/// A secret given inline or in a file (trailing whitespace trimmed).
fn secret(
    field: &str,
    inline: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<String>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!("{field} and {field}_file: give one")),
        (Some(s), None) => Ok(Some(s.clone())),
        (None, Some(p)) => std::fs::read_to_string(p)
            .map(|s| Some(s.trim_end().to_owned()))
            .map_err(|e| format!("{field}_file {}: {e}", p.display())),
        (None, None) => Ok(None),
    }
}

pub(crate) fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("url {url:?}: http or https"));
    }
    Ok(u)
}

fn client(c: HttpCommon<'_>) -> Result<reqwest::Client, String> {
    let tls = gatehouse_runtime::tls::client_config(c.ca)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(c.timeout_secs.max(1)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

/// Which HTTP API a destination speaks.
enum Api {
    Hec {
        token: String,
        index: Option<String>,
        sourcetype: Option<String>,
        source: String,
    },
    Bulk {
        index: String,
        auth: Option<String>,
    },
    Webhook {
        headers: Vec<(String, String)>,
        secret: Option<String>,
    },
}

/// An HTTP destination.
pub struct HttpDestination {
    http: reqwest::Client,
    url: reqwest::Url,
    gzip: bool,
    api: Api,
}

impl std::fmt::Debug for HttpDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpDestination")
            .field("url", &self.url.as_str())
            .finish()
    }
}

/// `osquery:results` / `osquery:status`; `gatehouse:audit` /
/// `gatehouse:alerts` for operator events.
fn default_sourcetype(t: LogType) -> String {
    match t {
        LogType::Results | LogType::Status => format!("osquery:{}", t.as_str()),
        LogType::Audit | LogType::Alerts => format!("gatehouse:{}", t.as_str()),
    }
}

/// An error with its causes (`error sending request: connection refused`):
/// reqwest's own message leaves out why.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = c.source();
    }
    out
}

/// `YYYY.MM.DD` of a unix time (seconds), UTC.
fn date(unix: i64) -> String {
    let (y, m, d) = gatehouse_core::time::civil_from_days(unix.div_euclid(86_400));
    format!("{y:04}.{m:02}.{d:02}")
}

impl HttpDestination {
    pub fn hec(c: &HecConfig) -> Result<Self, String> {
        let token = secret("token", &c.token, &c.token_file)?
            .ok_or_else(|| "token (or token_file) is required".to_owned())?;
        let base = check_url(&c.url)?;
        let url = base
            .join("/services/collector/event")
            .map_err(|e| format!("url: {e}"))?;
        Ok(Self {
            http: client(HttpCommon {
                ca: c.ca.as_deref(),
                timeout_secs: c.timeout_secs,
            })?,
            url,
            gzip: c.gzip,
            api: Api::Hec {
                token,
                index: c.index.clone(),
                sourcetype: c.sourcetype.clone(),
                source: c.source.clone().unwrap_or_else(|| "gatehouse".into()),
            },
        })
    }

    pub fn bulk(c: &BulkConfig) -> Result<Self, String> {
        let base = check_url(&c.url)?;
        let url = base.join("/_bulk").map_err(|e| format!("url: {e}"))?;
        let key = secret("api_key", &c.api_key, &c.api_key_file)?;
        let auth = match (key, &c.username, &c.password) {
            (Some(k), None, None) => Some(format!("ApiKey {k}")),
            (None, Some(u), Some(p)) => {
                use base64::Engine as _;
                let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                Some(format!("Basic {b}"))
            }
            (None, None, None) => None,
            (Some(_), _, _) => return Err("api_key and username/password: give one".into()),
            _ => return Err("username and password go together".into()),
        };
        if c.index.is_empty() {
            return Err("index: a name or pattern is needed".into());
        }
        Ok(Self {
            http: client(HttpCommon {
                ca: c.ca.as_deref(),
                timeout_secs: c.timeout_secs,
            })?,
            url,
            gzip: c.gzip,
            api: Api::Bulk {
                index: c.index.clone(),
                auth,
            },
        })
    }

    pub fn webhook(c: &WebhookConfig) -> Result<Self, String> {
        let url = check_url(&c.url)?;
        let mut headers = Vec::new();
        for (k, v) in &c.headers {
            reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| format!("headers.{k}: {e}"))?;
            reqwest::header::HeaderValue::from_str(v).map_err(|e| format!("headers.{k}: {e}"))?;
            headers.push((k.clone(), v.clone()));
        }
        Ok(Self {
            http: client(HttpCommon {
                ca: c.ca.as_deref(),
                timeout_secs: c.timeout_secs,
            })?,
            url,
            gzip: c.gzip,
            api: Api::Webhook {
                headers,
                secret: secret("secret", &c.secret, &c.secret_file)?,
            },
        })
    }

    /// The request body for `lines`.
    fn body(&self, lines: &[Line]) -> Vec<u8> {
        let mut out = Vec::new();
        match &self.api {
            Api::Hec {
                index,
                sourcetype,
                source,
                ..
            } => {
                for l in lines {
                    let mut ev = json!({
                        "time": l.unix_time,
                        "host": l.host_identifier(),
                        "source": source,
                        "sourcetype": sourcetype.clone().unwrap_or_else(|| default_sourcetype(l.log_type)),
                        "event": Value::Object(l.body.clone()),
                    });
                    if let Some(i) = index {
                        ev["index"] = json!(i);
                    }
                    out.extend(serde_json::to_vec(&ev).unwrap_or_default());
                    out.push(b'\n');
                }
            }
            Api::Bulk { index, .. } => {
                for l in lines {
                    let name = index
                        .replace("{date}", &date(l.unix_time))
                        .replace("{log}", l.log_type.as_str());
                    let action = json!({"create": {"_index": name, "_id": l.line_id}});
                    out.extend(serde_json::to_vec(&action).unwrap_or_default());
                    out.push(b'\n');
                    out.extend(l.to_json());
                    out.push(b'\n');
                }
            }
            Api::Webhook { .. } => {
                let arr: Vec<Value> = lines
                    .iter()
                    .map(|l| Value::Object(l.body.clone()))
                    .collect();
                out = serde_json::to_vec(&arr).unwrap_or_default();
            }
        }
        out
    }

    fn classify(status: reqwest::StatusCode, text: &str) -> DeliveryError {
        let msg = format!(
            "HTTP {status}: {}",
            text.chars().take(500).collect::<String>()
        );
        if status.as_u16() == 429 || status.is_server_error() {
            DeliveryError::Retry(msg)
        } else {
            DeliveryError::Reject(msg)
        }
    }

    /// A `_bulk` answer with `errors: true`: retry when an item failed
    /// with 429 or 5xx, reject when one failed otherwise (409: the line is
    /// there already, fine).
    fn bulk_items(answer: &Value) -> Result<(), DeliveryError> {
        if answer.get("errors").and_then(Value::as_bool) != Some(true) {
            return Ok(());
        }
        let items = answer
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut reject = None;
        for item in &items {
            let Some(r) = item.get("create").or_else(|| item.get("index")) else {
                continue;
            };
            let status = r.get("status").and_then(Value::as_u64).unwrap_or(0);
            match status {
                200..=299 | 409 => {}
                429 | 500..=599 => {
                    return Err(DeliveryError::Retry(format!(
                        "_bulk item {status}: {}",
                        r.get("error").cloned().unwrap_or_default()
                    )));
                }
                _ => {
                    reject.get_or_insert_with(|| {
                        format!(
                            "_bulk item {status}: {}",
                            r.get("error").cloned().unwrap_or_default()
                        )
                    });
                }
            }
        }
        match reject {
            Some(m) => Err(DeliveryError::Reject(m)),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Destination for HttpDestination {
    async fn deliver(&self, lines: &[Line]) -> Result<(), DeliveryError> {
        let body = self.body(lines);
        let mut req = self.http.post(self.url.clone());
        match &self.api {
            Api::Hec { token, .. } => {
                req = req
                    .header("authorization", format!("Splunk {token}"))
                    .header("content-type", "application/json");
            }
            Api::Bulk { auth, .. } => {
                req = req.header("content-type", "application/x-ndjson");
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
            }
            Api::Webhook { headers, secret } => {
                req = req.header("content-type", "application/json");
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                if let Some(s) = secret {
                    req = req.header(
                        "x-gatehouse-signature",
                        gatehouse_core::ids::hmac_sha256(s, &body),
                    );
                }
            }
        }
        let body = if self.gzip {
            req = req.header("content-encoding", "gzip");
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&body)
                .and_then(|()| enc.finish())
                .map_err(|e| DeliveryError::Retry(format!("gzip: {e}")))?
        } else {
            body
        };
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| DeliveryError::Retry(format!("{}: {}", self.url, causes(&e))))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(Self::classify(status, &text));
        }
        if let Api::Bulk { .. } = self.api {
            let answer: Value = serde_json::from_str(&text).map_err(|e| {
                DeliveryError::Retry(format!("_bulk answer is not JSON ({e}): {text:.200}"))
            })?;
            Self::bulk_items(&answer)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::http::{HeaderMap, StatusCode, Uri};
    use serde_json::json;

    use super::*;
    use crate::line::LogType;

    /// What a receiver got: path, headers, body (gunzipped).
    type Got = Arc<Mutex<Vec<(String, HeaderMap, Vec<u8>)>>>;

    /// A receiver answering `status` and `answer` to every POST.
    async fn receiver(status: u16, answer: Value) -> (String, Got) {
        let got: Got = Arc::default();
        let g = got.clone();
        let app = axum::Router::new().fallback(
            move |uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let (g, answer) = (g.clone(), answer.clone());
                async move {
                    let mut raw = body.to_vec();
                    if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
                        use std::io::Read;
                        let mut out = Vec::new();
                        flate2::read::GzDecoder::new(&raw[..])
                            .read_to_end(&mut out)
                            .unwrap();
                        raw = out;
                    }
                    g.lock()
                        .unwrap()
                        .push((uri.path().to_owned(), headers, raw));
                    (StatusCode::from_u16(status).unwrap(), axum::Json(answer))
                }
            },
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        (url, got)
    }

    fn line(n: u32, t: LogType) -> Line {
        Line {
            log_type: t,
            host_id: "h1".into(),
            name: Some("users".into()),
            unix_time: 1_700_000_000,
            line_id: format!("id-{n}"),
            body: json!({"name": "users", "hostIdentifier": "web-01", "columns": {"n": n}})
                .as_object()
                .cloned()
                .unwrap(),
        }
    }

    fn hec(url: &str) -> HecConfig {
        HecConfig {
            url: url.into(),
            token: Some("tok".into()),
            token_file: None,
            index: Some("osq".into()),
            sourcetype: None,
            source: None,
            gzip: false,
            ca: None,
            timeout_secs: 5,
        }
    }

    #[tokio::test]
    async fn splunk_hec_gets_one_event_per_line_with_its_metadata() {
        let (url, got) = receiver(200, json!({"text": "Success", "code": 0})).await;
        let d = HttpDestination::hec(&hec(&url)).unwrap();
        d.deliver(&[line(1, LogType::Results), line(2, LogType::Status)])
            .await
            .unwrap();
        let got = got.lock().unwrap();
        let (path, headers, body) = &got[0];
        assert_eq!(path, "/services/collector/event");
        assert_eq!(headers["authorization"], "Splunk tok");
        let events: Vec<Value> = String::from_utf8(body.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            events[0],
            json!({"time": 1_700_000_000, "host": "web-01", "source": "gatehouse",
                   "sourcetype": "osquery:results", "index": "osq",
                   "event": {"name": "users", "hostIdentifier": "web-01", "columns": {"n": 1}}})
        );
        assert_eq!(events[1]["sourcetype"], "osquery:status");
    }

    #[tokio::test]
    async fn elasticsearch_bulk_creates_each_line_once_in_its_dated_index() {
        let (url, got) = receiver(200, json!({"errors": false, "items": []})).await;
        let d = HttpDestination::bulk(&BulkConfig {
            url: url.clone(),
            index: default_index(),
            api_key: Some("k1".into()),
            api_key_file: None,
            username: None,
            password: None,
            gzip: true,
            ca: None,
            timeout_secs: 5,
        })
        .unwrap();
        d.deliver(&[line(1, LogType::Results), line(2, LogType::Results)])
            .await
            .unwrap();
        let got = got.lock().unwrap();
        let (path, headers, body) = &got[0];
        assert_eq!(path, "/_bulk");
        assert_eq!(headers["authorization"], "ApiKey k1");
        assert_eq!(headers["content-type"], "application/x-ndjson");
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(text.ends_with('\n'), "NDJSON ends with a newline");
        let rows: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            rows[0],
            json!({"create": {"_index": "osquery-results-2023.11.14", "_id": "id-1"}})
        );
        assert_eq!(rows[1]["columns"]["n"], 1);
        assert_eq!(rows[2]["create"]["_id"], "id-2");
        assert_eq!(rows.len(), 4);
    }

    #[test]
    fn bulk_item_failures_retry_or_reject_and_conflicts_are_fine() {
        let item = |s: u64| json!({"create": {"status": s, "error": {"type": "x"}}});
        let answer = |items: Vec<Value>| json!({"errors": true, "items": items});
        assert!(HttpDestination::bulk_items(&answer(vec![item(201), item(409)])).is_ok());
        assert!(matches!(
            HttpDestination::bulk_items(&answer(vec![item(201), item(429)])),
            Err(DeliveryError::Retry(_))
        ));
        assert!(matches!(
            HttpDestination::bulk_items(&answer(vec![item(400), item(201)])),
            Err(DeliveryError::Reject(_))
        ));
    }

    #[tokio::test]
    async fn a_webhook_is_signed_and_carries_its_headers() {
        let (url, got) = receiver(204, json!(null)).await;
        let d = HttpDestination::webhook(&WebhookConfig {
            url: format!("{url}/hook"),
            headers: BTreeMap::from([("x-team".into(), "secops".into())]),
            secret: Some("s3cret".into()),
            secret_file: None,
            gzip: false,
            ca: None,
            timeout_secs: 5,
        })
        .unwrap();
        d.deliver(&[line(7, LogType::Results)]).await.unwrap();
        let got = got.lock().unwrap();
        let (path, headers, body) = &got[0];
        assert_eq!(path, "/hook");
        assert_eq!(headers["x-team"], "secops");
        assert_eq!(
            headers["x-gatehouse-signature"].to_str().unwrap(),
            gatehouse_core::ids::hmac_sha256("s3cret", body)
        );
        let lines: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(lines[0]["columns"]["n"], 7);
    }

    #[tokio::test]
    async fn busy_receivers_are_retried_and_refusals_are_not() {
        let (url, _) = receiver(503, json!({"text": "Server is busy"})).await;
        let d = HttpDestination::hec(&hec(&url)).unwrap();
        let e = d.deliver(&[line(1, LogType::Results)]).await.unwrap_err();
        assert!(
            matches!(&e, DeliveryError::Retry(m) if m.contains("503")),
            "{e:?}"
        );
        let (url, _) = receiver(400, json!({"text": "Invalid data format", "code": 6})).await;
        let d = HttpDestination::hec(&hec(&url)).unwrap();
        let e = d.deliver(&[line(1, LogType::Results)]).await.unwrap_err();
        assert!(
            matches!(&e, DeliveryError::Reject(m) if m.contains("Invalid data format")),
            "the receiver's answer is kept: {e:?}"
        );
        // Nobody listening: a transport error, retried, saying why.
        let d = HttpDestination::hec(&hec("http://127.0.0.1:9")).unwrap();
        let e = d.deliver(&[line(1, LogType::Results)]).await.unwrap_err();
        assert!(
            matches!(&e, DeliveryError::Retry(m) if m.to_lowercase().contains("refused")),
            "{e:?}"
        );
    }

    #[test]
    fn configurations_are_checked_field_by_field() {
        let mut c = hec("ftp://x");
        assert!(
            HttpDestination::hec(&c)
                .err()
                .unwrap()
                .contains("http or https")
        );
        c = hec("http://x");
        c.token = None;
        assert!(HttpDestination::hec(&c).err().unwrap().contains("token"));
    }
}
