//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, derived
//! from the operation registry ([`crate::registry`]): paths, methods,
//! roles and audit from each operation's declaration; path and query
//! parameters and request bodies from its request type's JSON schema
//! (schemars, doc comments as descriptions); answers from its reply type.
//! A route cannot exist without its documentation, nor the reverse.

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use crate::registry::{Answer, Audit, Entry};

/// The schema of `T`, registered under `components/schemas`.
pub fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
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
pub fn document(ops: &[Entry]) -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    let mut paths: Map<String, Value> = Map::new();
    for entry in ops {
        let op = entry.spec;
        let in_path = path_params(op.path);
        let input = (entry.input)(&mut g).to_value();
        let mut properties = input["properties"].as_object().cloned().unwrap_or_default();
        let required: Vec<String> = input["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let mut params: Vec<Value> = in_path
            .iter()
            .map(|p| {
                let schema = properties
                    .remove(*p)
                    .unwrap_or_else(|| json!({"type": "string"}));
                json!({"name": p, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        let mut body = None;
        if op.verb.has_body() {
            if !properties.is_empty() {
                let mut b = input.clone();
                b["properties"] = Value::Object(properties);
                b["required"] = json!(
                    required
                        .iter()
                        .filter(|r| !in_path.contains(&r.as_str()))
                        .collect::<Vec<_>>()
                );
                body = Some(b);
            }
        } else {
            for (name, schema) in properties {
                let description = schema["description"].clone();
                params.push(json!({
                    "name": name, "in": "query", "required": required.contains(&name),
                    "description": description, "schema": schema,
                }));
            }
        }
        let audited = op.audit == Audit::Calls;
        let mut responses = Map::new();
        match (entry.answer)() {
            Answer::Json(f) => {
                responses.insert(
                    if op.created { "201" } else { "200" }.to_string(),
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
                if audited { " Recorded in the audit log." } else { "" }
            ),
            "x-gatehouse-role": op.role.as_str(),
            "x-gatehouse-audited": audited,
            "x-gatehouse-action": op.action,
            "x-gatehouse-grpc": format!("{}/{}", crate::GRPC_SERVICE, op.grpc),
            "parameters": params,
            "responses": responses,
        });
        if let Some(schema) = body {
            o["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": schema}}
            });
        }
        let item = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        item[op.verb.method().as_str().to_ascii_lowercase()] = o;
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
        let doc = document(&crate::registry::operations());
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
        assert!(schemas.contains_key("HostView") && schemas.contains_key("Coverage"));
    }
}
