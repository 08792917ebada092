//! The osquery TLS remote API on the wire (`osquery-protocol.md`).
//!
//! Parsing is strict about types and lenient about member order, exactly as
//! an agent needs: every function here turns bytes into a typed request or a
//! [`WireError`] whose text goes back to the agent inside an error body.
//! Response helpers guarantee the two protocol invariants: a failure always
//! has a non-empty JSON object body with an `error` member, and a success
//! never has one.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

/// A request the agent sent that we cannot accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("request body is not valid JSON: {0}")]
    Json(String),
    #[error("request body must be a JSON object")]
    NotObject,
    #[error("member `{0}` is missing")]
    Missing(&'static str),
    #[error("member `{field}` must be {expected}")]
    Type {
        field: String,
        expected: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
}

fn type_err(field: impl Into<String>, expected: &'static str) -> WireError {
    WireError::Type {
        field: field.into(),
        expected,
    }
}

/// Parses a body into a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, WireError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(WireError::NotObject),
    }
}

fn opt_str<'a>(
    m: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, WireError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(type_err(field, "a string")),
    }
}

fn req_str<'a>(m: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, WireError> {
    opt_str(m, field)?.ok_or(WireError::Missing(field))
}

/// Integer that may arrive as a JSON number or a decimal string.
fn req_u64(m: &Map<String, Value>, field: &'static str) -> Result<u64, WireError> {
    match m.get(field) {
        None => Err(WireError::Missing(field)),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| type_err(field, "a non-negative integer")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| type_err(field, "a non-negative integer")),
        Some(_) => Err(type_err(field, "a non-negative integer")),
    }
}

/// The node key from the `Authorization: NodeKey <key>` header (≥ 5.23.0)
/// or, failing that, the body's `node_key` member.
pub fn node_key<'a>(
    auth_header: Option<&'a str>,
    body: &'a Map<String, Value>,
) -> Result<&'a str, WireError> {
    if let Some(k) = header_node_key(auth_header) {
        return Ok(k);
    }
    node_key_given(None, opt_str(body, "node_key")?)
}

/// The node key from the header, else from the body's `node_key` member.
pub fn node_key_given<'a>(
    auth_header: Option<&'a str>,
    body_key: Option<&'a str>,
) -> Result<&'a str, WireError> {
    if let Some(k) = header_node_key(auth_header) {
        return Ok(k);
    }
    match body_key {
        Some(k) if !k.is_empty() => Ok(k),
        _ => Err(WireError::Missing("node_key")),
    }
}

/// The node key from the header alone (carve blocks have none in the body).
pub fn header_node_key(auth_header: Option<&str>) -> Option<&str> {
    auth_header
        .and_then(|h| h.strip_prefix("NodeKey "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

#[derive(Debug, Clone, PartialEq)]
pub struct EnrollRequest {
    pub enroll_secret: String,
    pub host_identifier: String,
    pub platform_type: String,
    pub host_details: Map<String, Value>,
}

pub fn parse_enroll(body: &[u8]) -> Result<EnrollRequest, WireError> {
    let m = parse_object(body)?;
    let enroll_secret = req_str(&m, "enroll_secret")?.to_owned();
    let host_identifier = opt_str(&m, "host_identifier")?
        .unwrap_or_default()
        .to_owned();
    let platform_type = match m.get("platform_type") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(type_err("platform_type", "a string")),
    };
    let host_details = match m.get("host_details") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(d)) => {
            for (table, row) in d {
                if !row.is_object() {
                    return Err(type_err(format!("host_details.{table}"), "an object"));
                }
            }
            d.clone()
        }
        Some(_) => return Err(type_err("host_details", "an object")),
    };
    Ok(EnrollRequest {
        enroll_secret,
        host_identifier,
        platform_type,
        host_details,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogType {
    Result,
    Status,
}

impl LogType {
    pub fn as_str(self) -> &'static str {
        match self {
            LogType::Result => "result",
            LogType::Status => "status",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogRequest {
    pub log_type: LogType,
    /// Every element is a JSON object (a line as the agent buffered it).
    pub data: Vec<Map<String, Value>>,
}

/// A log POST read without building a JSON tree of it.
#[derive(Debug)]
pub struct LogPost<'a> {
    /// The `node_key` member, if the body has one.
    pub node_key: Option<std::borrow::Cow<'a, str>>,
    pub log_type: LogType,
    /// Every element of `data`, each an object.
    pub lines: Vec<crate::logline::Canon<'a>>,
}

/// Reads a well-formed log POST in one pass, strings borrowed from `body`.
/// `None` for anything else (wrong types, a bad `log_type`, a line that is
/// not an object, duplicate members, invalid JSON): [`parse_object`] and
/// [`parse_log`] then say precisely what is wrong, as for any request.
pub fn read_log_post(body: &[u8]) -> Option<LogPost<'_>> {
    use crate::logline::{Canon, Str};
    #[derive(serde::Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        node_key: Option<Str<'a>>,
        #[serde(borrow)]
        log_type: Option<Str<'a>>,
        #[serde(borrow)]
        data: Option<Vec<Canon<'a>>>,
    }
    let b: Body<'_> = serde_json::from_slice(body).ok()?;
    let log_type = match b.log_type?.0.as_ref() {
        "result" => LogType::Result,
        "status" => LogType::Status,
        _ => return None,
    };
    let lines = b.data.unwrap_or_default();
    if !lines.iter().all(Canon::is_object) {
        return None;
    }
    Some(LogPost {
        node_key: b.node_key.map(|k| k.0),
        log_type,
        lines,
    })
}

pub fn parse_log(m: Map<String, Value>) -> Result<LogRequest, WireError> {
    let log_type = match req_str(&m, "log_type")? {
        "result" => LogType::Result,
        "status" => LogType::Status,
        other => {
            return Err(WireError::Invalid(format!(
                "log_type must be \"result\" or \"status\", not {other:?}"
            )));
        }
    };
    let mut m = m;
    let data = match m.remove("data") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::Object(o) => out.push(o),
                    _ => return Err(type_err(format!("data[{i}]"), "an object")),
                }
            }
            out
        }
        Some(_) => return Err(type_err("data", "an array of objects")),
    };
    Ok(LogRequest { log_type, data })
}

/// One query's answer in a distributed write.
#[derive(Debug, Clone, PartialEq)]
pub struct DistributedAnswer {
    pub query_id: String,
    pub rows: Vec<Value>,
    pub status: i64,
    pub message: String,
    pub stats: Map<String, Value>,
}

/// Parses `queries`/`statuses`/`messages`/`stats` into one answer per id.
/// An id that appears only in `statuses` (a failed query with no rows
/// member) still yields an answer.
pub fn parse_distributed_write(
    m: &Map<String, Value>,
) -> Result<Vec<DistributedAnswer>, WireError> {
    let obj = |field: &'static str| -> Result<Option<&Map<String, Value>>, WireError> {
        match m.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(_) => Err(type_err(field, "an object")),
        }
    };
    let queries = obj("queries")?;
    let statuses = obj("statuses")?;
    let messages = obj("messages")?;
    let stats = obj("stats")?;
    let mut ids: Vec<&String> = queries.into_iter().flat_map(|q| q.keys()).collect();
    ids.extend(statuses.into_iter().flat_map(|s| s.keys()));
    ids.sort();
    ids.dedup();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if id.is_empty() {
            return Err(WireError::Invalid("query id must not be empty".into()));
        }
        let rows = match queries.and_then(|q| q.get(id)) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(rows)) => {
                for (i, r) in rows.iter().enumerate() {
                    if !r.is_object() {
                        return Err(type_err(format!("queries.{id}[{i}]"), "an object"));
                    }
                }
                rows.clone()
            }
            Some(_) => return Err(type_err(format!("queries.{id}"), "an array of rows")),
        };
        let status = match statuses.and_then(|s| s.get(id)) {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| type_err(format!("statuses.{id}"), "an integer"))?,
            Some(Value::String(s)) => s
                .parse()
                .map_err(|_| type_err(format!("statuses.{id}"), "an integer"))?,
            Some(_) => return Err(type_err(format!("statuses.{id}"), "an integer")),
        };
        let message = match messages.and_then(|s| s.get(id)) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(type_err(format!("messages.{id}"), "a string")),
        };
        let stats = match stats.and_then(|s| s.get(id)) {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(_) => return Err(type_err(format!("stats.{id}"), "an object")),
        };
        out.push(DistributedAnswer {
            query_id: id.clone(),
            rows,
            status,
            message,
            stats,
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
pub struct CarveBegin {
    pub block_count: u64,
    pub block_size: u64,
    pub carve_size: u64,
    pub carve_id: String,
    pub request_id: String,
}

pub fn parse_carve_begin(m: &Map<String, Value>) -> Result<CarveBegin, WireError> {
    let b = CarveBegin {
        block_count: req_u64(m, "block_count")?,
        block_size: req_u64(m, "block_size")?,
        carve_size: req_u64(m, "carve_size")?,
        carve_id: req_str(m, "carve_id")?.to_owned(),
        request_id: opt_str(m, "request_id")?.unwrap_or_default().to_owned(),
    };
    if b.block_size == 0 {
        return Err(WireError::Invalid("block_size must be positive".into()));
    }
    if b.carve_id.is_empty() {
        return Err(WireError::Invalid("carve_id must not be empty".into()));
    }
    let expected = b.carve_size.div_ceil(b.block_size);
    if b.block_count != expected {
        return Err(WireError::Invalid(format!(
            "block_count {} does not match ceil(carve_size / block_size) = {expected}",
            b.block_count
        )));
    }
    Ok(b)
}

#[derive(Debug, Clone, PartialEq)]
pub struct CarveBlock {
    pub block_id: u64,
    pub session_id: String,
    pub request_id: String,
    pub data: Vec<u8>,
}

pub fn parse_carve_block(body: &[u8]) -> Result<CarveBlock, WireError> {
    let m = parse_object(body)?;
    let data = STANDARD
        .decode(req_str(&m, "data")?)
        .map_err(|e| WireError::Invalid(format!("data is not valid base64: {e}")))?;
    Ok(CarveBlock {
        block_id: req_u64(&m, "block_id")?,
        session_id: req_str(&m, "session_id")?.to_owned(),
        request_id: opt_str(&m, "request_id")?.unwrap_or_default().to_owned(),
        data,
    })
}

/// `{"error": message}`: the agent keeps its data and retries.
pub fn error_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": message }))
        .unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec())
}

/// `{"node_invalid": true, "error": message}`: the agent wipes its key and
/// enrolls again.
pub fn node_invalid_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "node_invalid": true, "error": message }))
        .unwrap_or_else(|_| b"{\"node_invalid\":true,\"error\":\"invalid node key\"}".to_vec())
}

/// Platform family from `platform_type` (a decimal bitmask) and `os_version`.
pub fn platform_family(platform_type: &str, details: &Map<String, Value>) -> &'static str {
    let mask: u32 = platform_type.trim().parse().unwrap_or(0);
    if mask & 2 != 0 {
        return "windows";
    }
    if mask & 16 != 0 {
        return "darwin";
    }
    if mask & 32 != 0 {
        return "freebsd";
    }
    if mask & 8 != 0 {
        return "linux";
    }
    let platform = details
        .get("os_version")
        .and_then(|o| o.get("platform"))
        .and_then(Value::as_str)
        .unwrap_or("");
    match platform {
        "darwin" => "darwin",
        "windows" => "windows",
        "freebsd" => "freebsd",
        "" => "unknown",
        _ => "linux",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_key_prefers_header() {
        let body = parse_object(br#"{"node_key":"body"}"#).unwrap_or_default();
        assert_eq!(node_key(Some("NodeKey hdr"), &body), Ok("hdr"));
        assert_eq!(node_key(None, &body), Ok("body"));
        assert_eq!(node_key(Some("Bearer x"), &body), Ok("body"));
        let empty = parse_object(br#"{"node_key":""}"#).unwrap_or_default();
        assert_eq!(node_key(None, &empty), Err(WireError::Missing("node_key")));
    }

    #[test]
    fn rejects_non_objects_and_bad_types() {
        assert_eq!(parse_object(b"[1]"), Err(WireError::NotObject));
        assert!(matches!(parse_object(b"{\"a\":"), Err(WireError::Json(_))));
        let m = parse_object(br#"{"log_type":"result","data":[1]}"#).unwrap_or_default();
        assert!(matches!(parse_log(m), Err(WireError::Type { .. })));
        let m = parse_object(br#"{"log_type":"x","data":[]}"#).unwrap_or_default();
        assert!(matches!(parse_log(m), Err(WireError::Invalid(_))));
        assert!(matches!(
            parse_enroll(br#"{"host_identifier":"x"}"#),
            Err(WireError::Missing("enroll_secret"))
        ));
        assert!(matches!(
            parse_enroll(br#"{"enroll_secret":1}"#),
            Err(WireError::Type { .. })
        ));
    }

    #[test]
    fn distributed_write_merges_maps() {
        let m = parse_object(
            br#"{"stats":{"q1":{"wall_time_ms":3}},"statuses":{"q1":0,"q2":1},"messages":{"q2":"no such table: foo"},
                 "queries":{"q1":[{"a":"1"}],"q2":[]},"node_key":"k"}"#,
        )
        .unwrap_or_default();
        let a = parse_distributed_write(&m).unwrap_or_default();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].query_id, "q1");
        assert_eq!(a[0].rows.len(), 1);
        assert_eq!(a[0].stats.get("wall_time_ms"), Some(&Value::from(3)));
        assert_eq!(a[1].status, 1);
        assert_eq!(a[1].message, "no such table: foo");
    }

    #[test]
    fn carve_begin_validates_block_count() {
        let ok = parse_object(br#"{"block_count":2,"block_size":8192,"carve_size":10240,"carve_id":"c","request_id":"r"}"#)
            .unwrap_or_default();
        assert!(parse_carve_begin(&ok).is_ok());
        let bad = parse_object(
            br#"{"block_count":3,"block_size":8192,"carve_size":10240,"carve_id":"c"}"#,
        )
        .unwrap_or_default();
        assert!(matches!(
            parse_carve_begin(&bad),
            Err(WireError::Invalid(_))
        ));
    }

    #[test]
    fn error_bodies_have_error_member() {
        let v: Value = serde_json::from_slice(&error_body("x")).unwrap_or_default();
        assert_eq!(v["error"], "x");
        let v: Value = serde_json::from_slice(&node_invalid_body("y")).unwrap_or_default();
        assert_eq!(v["node_invalid"], true);
    }

    #[test]
    fn platforms() {
        let m = Map::new();
        assert_eq!(platform_family("9", &m), "linux");
        assert_eq!(platform_family("21", &m), "darwin");
        assert_eq!(platform_family("2", &m), "windows");
        assert_eq!(platform_family("37", &m), "freebsd");
    }
}
