//! How the agent judges a response (§3): the status code is never read.

use serde_json::{Map, Value};

use crate::transport::{HttpReply, TransportError};

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Success; the body as an object (`{}` for an empty body).
    Ok(Map<String, Value>),
    /// `node_invalid: true`: the key is wiped, the agent re-enrolls.
    NodeInvalid,
    /// An `error` member, or a body that is not JSON.
    Failed(String),
    /// Transport failure (connect, TLS, timeout).
    Transport(TransportError),
}

/// The common path for config, log and distributed requests (§3.1).
pub fn judge(r: Result<HttpReply, TransportError>) -> Outcome {
    let r = match r {
        Ok(r) => r,
        Err(e) => return Outcome::Transport(e),
    };
    if r.body.is_empty() {
        return Outcome::Ok(Map::new());
    }
    let v: Value = match serde_json::from_slice(&r.body) {
        Ok(v) => v,
        Err(e) => return Outcome::Failed(format!("unparsable body (status {}): {e}", r.status)),
    };
    let Value::Object(m) = v else {
        // The real agent has undefined behaviour here; count it as failure.
        return Outcome::Failed(format!("non-object JSON body (status {})", r.status));
    };
    if m.get("node_invalid") == Some(&Value::Bool(true)) {
        return Outcome::NodeInvalid;
    }
    if let Some(e) = m.get("error") {
        return Outcome::Failed(e.as_str().map_or_else(|| e.to_string(), str::to_owned));
    }
    Outcome::Ok(m)
}

/// Enroll (§3.2, §4.3): only a non-empty string `node_key` (or `id`) counts.
pub fn enroll_key(r: &Result<HttpReply, TransportError>) -> Option<String> {
    let r = r.as_ref().ok()?;
    let v: Value = serde_json::from_slice(&r.body).ok()?;
    ["node_key", "id"].iter().find_map(|k| {
        v.get(*k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn reply(status: u16, body: &str) -> Result<HttpReply, TransportError> {
        Ok(HttpReply {
            status,
            body: Bytes::from(body.to_owned()),
        })
    }

    #[test]
    fn status_codes_are_ignored() {
        assert_eq!(
            judge(reply(500, "")),
            Outcome::Ok(Map::new()),
            "empty body is success even on 500"
        );
        assert!(matches!(
            judge(reply(200, "{\"error\":null}")),
            Outcome::Failed(_)
        ));
        assert!(matches!(judge(reply(401, "{}")), Outcome::Ok(_)));
        assert_eq!(
            judge(reply(401, "{\"node_invalid\":true}")),
            Outcome::NodeInvalid
        );
        assert!(matches!(
            judge(reply(502, "<html>bad gateway</html>")),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            judge(Err(TransportError::Timeout)),
            Outcome::Transport(_)
        ));
        assert_eq!(
            enroll_key(&reply(200, "{\"node_key\":\"k\"}")).as_deref(),
            Some("k")
        );
        assert_eq!(
            enroll_key(&reply(200, "{\"id\":\"k2\"}")).as_deref(),
            Some("k2")
        );
        assert_eq!(enroll_key(&reply(200, "{\"node_key\":\"\"}")), None);
        assert_eq!(enroll_key(&reply(200, "{\"node_key\":5}")), None);
    }
}
