//! The API client `ctl` speaks through: typed calls of the operations the
//! API declares ([`gatehouse_api::registry`]). The request type says which
//! fields go into the path (each `{param}` of the operation's path,
//! encoded as a path segment), the rest into the query string (GET and
//! DELETE) or the JSON body; the answer is decoded as the operation's
//! reply type. The same declaration drives the server's decoding, so the
//! client cannot build a request the server reads differently.

use std::time::Duration;

use gatehouse_api::registry::{Input, Operation, Spec};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::args::CtlArgs;
use super::{CtlError, failed};

pub struct Api {
    pub(super) http: reqwest::Client,
    pub(super) url: String,
    pub(super) token: String,
    /// A CA was given (or found in `--data`); else the system's roots.
    custom_ca: bool,
}

impl Api {
    pub fn new(a: &CtlArgs) -> Result<Self, CtlError> {
        let data = a.data.as_deref();
        let read_token = |f: &std::path::Path| {
            std::fs::read_to_string(f)
                .map(|t| t.trim().to_owned())
                .map_err(|e| failed(format!("{}: {e}", f.display())))
        };
        let token = match (&a.token, &a.token_file, data) {
            (Some(t), _, _) => t.clone(),
            (None, Some(f), _) => read_token(f)?,
            (None, None, Some(d)) => read_token(&d.join("secrets/admin_token"))?,
            (None, None, None) => {
                return Err(CtlError::Failed(
                    "give --token, --token-file or --data (or GATEHOUSE_TOKEN, GATEHOUSE_TOKEN_FILE, GATEHOUSE_DATA)".into(),
                ));
            }
        };
        let url = match (&a.url, data) {
            (Some(u), _) => u.clone(),
            (None, Some(d)) => crate::bootstrap::Endpoints::read(d)
                .map(|e| e.api)
                .ok_or_else(|| {
                    failed(format!(
                        "{} has no {}: start `gatehouse serve` on it, or give --url",
                        d.display(),
                        crate::bootstrap::Endpoints::FILE
                    ))
                })?,
            (None, None) => "https://127.0.0.1:8444".to_owned(),
        };
        let ca =
            a.ca.clone()
                .or_else(|| data.map(|d| d.join("tls/ca.pem")).filter(|p| p.exists()));
        let mut roots = rustls::RootCertStore::empty();
        match &ca {
            Some(ca) => {
                for c in CertificateDer::pem_file_iter(ca)
                    .map_err(|e| failed(format!("{}: {e}", ca.display())))?
                {
                    roots
                        .add(c.map_err(|e| failed(format!("{}: {e}", ca.display())))?)
                        .map_err(failed)?;
                }
            }
            None => {
                // A certificate from a public or company CA the system
                // trusts needs no --ca; one the system cannot use is
                // skipped, as curl does.
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
            }
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(failed)?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            token,
            custom_ca: ca.is_some(),
        })
    }

    /// A request that never got an answer, in words: the URL, the error
    /// chain, and what to do about the usual causes, recognised by type
    /// (an I/O error's kind, a rustls certificate error), not by text.
    pub fn unreachable(&self, e: &reqwest::Error) -> CtlError {
        let mut causes: Vec<String> = Vec::new();
        let (mut refused, mut untrusted) = (false, false);
        let mut next: Option<&dyn std::error::Error> = Some(e);
        while let Some(err) = next {
            let text = err.to_string();
            if !causes.iter().any(|c| c.contains(&text)) {
                causes.push(text);
            }
            refused |= classify(err, &mut untrusted);
            next = err.source();
        }
        let chain = causes.join(": ");
        let hint = if refused {
            " (connection refused: is `gatehouse serve` running, and is this its api_listen address?)"
        } else if untrusted && self.custom_ca {
            " (certificate not trusted: the server's certificate does not chain to the given CA)"
        } else if untrusted {
            " (certificate not trusted: give --ca with the CA it chains to, e.g. gatehouse-data/tls/ca.pem, or --data)"
        } else if e.is_timeout() {
            " (timed out)"
        } else {
            ""
        };
        failed(format!("cannot reach {}: {chain}{hint}", self.url))
    }

    /// Calls `O` with `req`; its answer, decoded as `O`'s reply.
    pub async fn call<O>(&self, req: &O::Req) -> Result<O::Resp, CtlError>
    where
        O: Operation,
        O::Req: Serialize,
        O::Resp: DeserializeOwned,
    {
        let v = self.send::<O>(req).await?;
        serde_json::from_value(v).map_err(|e| {
            failed(format!(
                "the answer to {} is not what this ctl expects ({e}); is the server another version?",
                O::SPEC.id
            ))
        })
    }

    /// Calls `O` with `req`; its answer as JSON (null when empty).
    pub async fn send<O>(&self, req: &O::Req) -> Result<Value, CtlError>
    where
        O: Operation,
        O::Req: Serialize + Input,
    {
        let request = self.request(O::SPEC, req)?;
        let resp = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(failed)?;
        let v: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| failed(format!("answer is not JSON: {e}")))?
        };
        if status.is_success() {
            Ok(v)
        } else {
            let msg = v["error"].as_str().unwrap_or("no message").to_owned();
            Err(CtlError::Refused(format!("{} {}", status.as_u16(), msg)))
        }
    }

    /// Calls `O`, whose answer is a byte stream, writing it to `out` as it
    /// arrives; returns the bytes written and their SHA-256 (hex).
    pub async fn download<O>(
        &self,
        req: &O::Req,
        out: &mut impl std::io::Write,
    ) -> Result<(u64, String), CtlError>
    where
        O: Operation,
        O::Req: Serialize + Input,
    {
        let request = self.request(O::SPEC, req)?;
        let mut resp = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.map_err(failed)?;
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let msg = v["error"].as_str().unwrap_or("no message").to_owned();
            return Err(CtlError::Refused(format!("{} {}", status.as_u16(), msg)));
        }
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut n = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.unreachable(&e))? {
            digest.update(&chunk);
            out.write_all(&chunk)
                .map_err(|e| failed(format!("writing the download: {e}")))?;
            n += chunk.len() as u64;
        }
        Ok((n, gatehouse_core::ids::hex(digest.finish().as_ref())))
    }

    /// The HTTP request for `spec` with `req`'s fields in the path, the
    /// query string or the body.
    pub(super) fn request(
        &self,
        spec: Spec,
        req: &impl Serialize,
    ) -> Result<reqwest::RequestBuilder, CtlError> {
        let mut fields = match serde_json::to_value(req).map_err(failed)? {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => return Err(failed(format!("a request is not an object: {other}"))),
        };
        let mut url = reqwest::Url::parse(&self.url)
            .map_err(|e| failed(format!("--url {}: {e}", self.url)))?;
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| failed(format!("--url {}: not a base URL", self.url)))?;
            segments.pop_if_empty();
            for seg in spec.path.trim_start_matches('/').split('/') {
                match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(param) => {
                        let v = fields.remove(param).unwrap_or(Value::Null);
                        segments.push(
                            &scalar(&v).ok_or_else(|| {
                                failed(format!("{}: `{param}` is missing", spec.id))
                            })?,
                        );
                    }
                    None => {
                        segments.push(seg);
                    }
                }
            }
        }
        let verb = spec.verb;
        let mut r = self
            .http
            .request(verb.method(), url)
            .bearer_auth(&self.token);
        if verb.has_body() {
            r = r.json(&Value::Object(fields));
        } else {
            let pairs: Vec<(String, String)> = fields
                .into_iter()
                .filter_map(|(k, v)| scalar(&v).map(|s| (k, s)))
                .collect();
            if !pairs.is_empty() {
                r = r.query(&pairs);
            }
        }
        Ok(r)
    }
}

/// A path or query value: strings as they are, numbers and booleans as
/// written; nothing for null.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Whether `err` is a refused connection; sets `untrusted` when it is (or
/// wraps) a rustls certificate error. An `io::Error`'s `source()` skips
/// the error it carries (TLS errors come as io errors in io errors), so
/// those are looked into.
fn classify(err: &(dyn std::error::Error + 'static), untrusted: &mut bool) -> bool {
    if matches!(
        err.downcast_ref::<rustls::Error>(),
        Some(rustls::Error::InvalidCertificate(_))
    ) {
        *untrusted = true;
    }
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        let inner = io.get_ref().is_some_and(|i| classify(i, untrusted));
        return io.kind() == std::io::ErrorKind::ConnectionRefused || inner;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_api::ops::definitions::{PutQuery, QueryDef};
    use gatehouse_api::ops::hosts::{HostFilter, HostLogs, HostStatusLogs, ListHosts};

    fn api() -> Api {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Api {
            http: reqwest::Client::new(),
            url: "https://gh.example:8444".into(),
            token: "t".into(),
            custom_ca: true,
        }
    }

    #[test]
    fn path_fields_are_encoded_segments_and_the_rest_a_query_or_a_body() {
        let r = api()
            .request(
                HostStatusLogs::SPEC,
                &HostLogs {
                    id: "a/b c".into(),
                    since: Some(5),
                    until: None,
                    limit: None,
                },
            )
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            r.url().as_str(),
            "https://gh.example:8444/api/v1/hosts/a%2Fb%20c/status_logs?since=5"
        );
        let r = api()
            .request(
                ListHosts::SPEC,
                &HostFilter {
                    search: Some("web & db".into()),
                    online: Some(true),
                    ..HostFilter::default()
                },
            )
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(r.url().query(), Some("online=true&search=web+%26+db"));
        let r = api()
            .request(
                PutQuery::SPEC,
                &QueryDef {
                    name: "q 1".into(),
                    sql: "SELECT 1".into(),
                    description: String::new(),
                },
            )
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(r.method(), reqwest::Method::PUT);
        assert_eq!(r.url().path(), "/api/v1/queries/q%201");
        let body: Value =
            serde_json::from_slice(r.body().and_then(|b| b.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"sql": "SELECT 1", "description": ""})
        );
    }
}
