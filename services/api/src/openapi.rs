//! The REST API's one route table: [`crate::rest::router`] mounts it and
//! [`document`] turns it into the OpenAPI 3.1 document served at
//! `/api/v1/openapi.json`, with JSON schemas derived (schemars) from the
//! very types the handlers parse and return. A route cannot exist without
//! its documentation, nor the reverse.

use axum::http::Method;
use gatehouse_core::model::Role;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

/// Builds the schema of one request or response body.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T`, registered under `components/schemas`.
pub fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// What a successful call answers.
#[derive(Clone, Copy)]
pub enum Answer {
    Json(u16, SchemaFn),
    NoContent,
    Binary,
    /// `text/event-stream`: one event per message of this schema, named by
    /// its `type`.
    Events(SchemaFn),
}

/// One operation of the REST API.
#[derive(Clone)]
pub struct Op {
    pub method: Method,
    /// axum's path syntax, which is OpenAPI's (`/api/v1/hosts/{id}`).
    pub path: &'static str,
    pub id: &'static str,
    pub summary: &'static str,
    /// The least role that may call it.
    pub role: Role,
    /// Query parameters: name and meaning.
    pub query: &'static [(&'static str, &'static str)],
    pub body: Option<SchemaFn>,
    pub answer: Answer,
    /// A write or query run (recorded in the audit log).
    pub audited: bool,
}

impl Op {
    pub fn new(
        method: Method,
        path: &'static str,
        id: &'static str,
        summary: &'static str,
        role: Role,
    ) -> Self {
        Self {
            method,
            path,
            id,
            summary,
            role,
            query: &[],
            body: None,
            answer: Answer::NoContent,
            audited: false,
        }
    }

    pub fn query(mut self, q: &'static [(&'static str, &'static str)]) -> Self {
        self.query = q;
        self
    }

    pub fn body(mut self, f: SchemaFn) -> Self {
        self.body = Some(f);
        self
    }

    pub fn json(mut self, f: SchemaFn) -> Self {
        self.answer = Answer::Json(200, f);
        self
    }

    pub fn created(mut self, f: SchemaFn) -> Self {
        self.answer = Answer::Json(201, f);
        self
    }

    pub fn events(mut self, f: SchemaFn) -> Self {
        self.answer = Answer::Events(f);
        self
    }

    pub fn binary(mut self) -> Self {
        self.answer = Answer::Binary;
        self
    }

    pub fn audited(mut self) -> Self {
        self.audited = true;
        self
    }
}

/// `{"error": "..."}`, the body of every 4xx and 5xx answer.
#[derive(serde::Serialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong, and what to fix.
    pub error: String,
}

fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn error_response(g: &mut SchemaGenerator, what: &str) -> Value {
    json!({
        "description": what,
        "content": {"application/json": {"schema": schema::<ErrorBody>(g)}}
    })
}

/// The OpenAPI 3.1 document of `ops`.
pub fn document(ops: &[Op]) -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    let mut paths: Map<String, Value> = Map::new();
    for op in ops {
        let mut params: Vec<Value> = path_params(op.path)
            .into_iter()
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(op.query.iter().map(|(name, what)| {
            json!({"name": name, "in": "query", "required": false, "description": what, "schema": {"type": "string"}})
        }));
        let mut responses = Map::new();
        match op.answer {
            Answer::Json(code, f) => {
                responses.insert(
                    code.to_string(),
                    json!({"description": "success", "content": {"application/json": {"schema": f(&mut g)}}}),
                );
            }
            Answer::NoContent => {
                responses.insert("204".into(), json!({"description": "done"}));
            }
            Answer::Events(f) => {
                responses.insert(
                    "200".into(),
                    json!({"description": "Server-Sent Events: `event` is the message's `type`, `data` its JSON", "content": {"text/event-stream": {"itemSchema": f(&mut g)}}}),
                );
            }
            Answer::Binary => {
                responses.insert(
                    "200".into(),
                    json!({"description": "the bytes", "content": {"application/octet-stream": {"schema": {"type": "string", "contentEncoding": "binary"}}}}),
                );
            }
        }
        for (code, what) in [
            (
                "400",
                "the request is malformed or invalid; the message says what to fix",
            ),
            ("401", "missing or invalid API token"),
            (
                "403",
                "the caller's role does not allow this; the message names the role needed",
            ),
            ("404", "no such resource"),
            (
                "503",
                "a dependency (store, host service) is unavailable; retry",
            ),
        ] {
            responses.insert(code.into(), error_response(&mut g, what));
        }
        let mut o = json!({
            "operationId": op.id,
            "summary": op.summary,
            "description": format!(
                "Needs the {} role.{}",
                op.role.as_str(),
                if op.audited { " Recorded in the audit log." } else { "" }
            ),
            "x-gatehouse-role": op.role.as_str(),
            "x-gatehouse-audited": op.audited,
            "parameters": params,
            "responses": responses,
        });
        if let Some(f) = op.body {
            o["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": f(&mut g)}}
            });
        }
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method.as_str().to_ascii_lowercase()] = o;
    }
    let schemas = g.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Gatehouse operator API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Hosts, labels, queries, schedules, live queries, results, carves, users, tokens, enroll secrets and the audit log. The same operations are served over gRPC (gatehouse.v1.Admin) on the same port.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves_and_every_operation_is_unique() {
        let doc = document(&crate::rest::operations_doc());
        let schemas = doc["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"").skip(1) {
            let target = r.split('"').next().unwrap_or_default();
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {target}"));
            assert!(schemas.contains_key(name), "dangling $ref {target}");
        }
        let mut ids: Vec<&str> = Vec::new();
        for item in doc["paths"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.values())
        {
            for op in item.as_object().into_iter().flat_map(|o| o.values()) {
                ids.push(op["operationId"].as_str().unwrap_or_default());
            }
        }
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "operationIds are unique");
        assert!(schemas.contains_key("HostView") && schemas.contains_key("CampaignRequest"));
    }
}
