//! `ctl apply` and `ctl get`: definitions as YAML specs (`kind`, `name`,
//! `spec` per document) compared with the server's in one canonical form,
//! applied through the same typed operations as every other command.
//! Specs are decoded as the API's own requests, which refuse unknown
//! fields, so a typo is an error naming the file, the definition and the
//! field, before anything changes.

use std::path::PathBuf;

use gatehouse_api::ops::NoInput;
use gatehouse_api::ops::definitions::{
    LabelConfigDef, LabelQueryDef, ListLabelConfigs, ListLabelQueries, ListQueries, ListSchedules,
    PutLabelConfig, PutLabelQuery, PutQuery, PutSchedule, QueryDef, ScheduleDef,
};
use gatehouse_api::ops::identity::{CreateUser, ListUsers, UpdateUser, UserRequest, UserUpdate};
use gatehouse_api::ops::rules::{ListRules, PutRule, RuleDef};
use serde::Deserialize as _;
use serde_json::{Value, json};

use super::client::Api;
use super::render::{cell, json};
use super::{CtlError, failed};

/// One definition as a file holds it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub spec: Value,
}

/// Kinds in the order they are applied (schedules name queries), with the
/// field that names a definition.
const KINDS: &[(&str, &str)] = &[
    ("query", "name"),
    ("schedule", "name"),
    ("label_config", "label"),
    ("label_query", "label"),
    ("rule", "name"),
    ("user", "name"),
];

/// A user as a spec: its role and whether it is disabled (tokens are made
/// with `ctl tokens create`, never from files).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSpec {
    role: gatehouse_core::model::Role,
    #[serde(default)]
    disabled: bool,
}

/// A definition's spec in one canonical form: parsed as the server's own
/// type (defaults filled in), without its name and update time.
fn canonical(kind: &str, name: &str, spec: &Value) -> Result<Value, String> {
    use gatehouse_core::model::{LabelConfig, Query, Schedule};
    let mut full = spec.as_object().cloned().unwrap_or_default();
    let key = if kind == "label_config" || kind == "label_query" {
        "label"
    } else {
        "name"
    };
    full.insert(key.into(), json!(name));
    full.remove("updated_at");
    let full = Value::Object(full);
    // First as the API's request, which refuses unknown fields: a typo
    // must not silently drop a setting.
    let strict = match kind {
        "query" => strict::<QueryDef>(&full),
        "schedule" => strict::<ScheduleDef>(&full),
        "label_config" => strict::<LabelConfigDef>(&full),
        "label_query" => strict::<LabelQueryDef>(&full),
        "rule" => strict::<RuleDef>(&full),
        _ => Ok(()),
    };
    strict.map_err(|e| format!("{kind} {name}: {e}"))?;
    let typed = match kind {
        "query" => serde_json::from_value::<Query>(full).and_then(serde_json::to_value),
        "schedule" => serde_json::from_value::<Schedule>(full).and_then(serde_json::to_value),
        "label_config" => {
            serde_json::from_value::<LabelConfig>(full).and_then(serde_json::to_value)
        }
        "label_query" => serde_json::from_value::<gatehouse_core::model::LabelQuery>(full)
            .and_then(serde_json::to_value),
        "user" => {
            let mut o = full.as_object().cloned().unwrap_or_default();
            o.retain(|k, _| !["name", "created_at", "created_by"].contains(&k.as_str()));
            serde_json::from_value::<UserSpec>(Value::Object(o)).and_then(serde_json::to_value)
        }
        "rule" => serde_json::from_value::<gatehouse_core::rules::Rule>(full)
            .and_then(serde_json::to_value),
        other => {
            return Err(format!(
                "unknown kind {other:?}: query, schedule, label_config, label_query, rule or user"
            ));
        }
    }
    .map_err(|e| format!("{kind} {name}: {e}"))?;
    let mut o = typed.as_object().cloned().unwrap_or_default();
    o.remove(key);
    o.remove("updated_at");
    Ok(Value::Object(o))
}

fn strict<T: serde::de::DeserializeOwned>(v: &Value) -> Result<(), serde_json::Error> {
    serde_json::from_value::<T>(v.clone()).map(|_| ())
}

/// Every spec in `paths`: files as given, directories' `*.yaml` and
/// `*.yml` files (not their subdirectories); several documents per file.
/// A name defined twice, in one file or across them, is an error.
pub fn load_specs(paths: &[PathBuf]) -> Result<Vec<Spec>, String> {
    let mut files: Vec<PathBuf> = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_dir() {
            files.push(path.clone());
            continue;
        }
        let mut in_dir: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        in_dir.sort();
        if in_dir.is_empty() {
            return Err(format!("{}: no *.yaml or *.yml files", path.display()));
        }
        files.extend(in_dir);
    }
    let mut out: Vec<Spec> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v = serde_norway::Value::deserialize(doc)
                .map_err(|e| format!("{}: {e}", f.display()))?;
            if v.is_null() {
                continue;
            }
            let s: Spec =
                serde_norway::from_value(v).map_err(|e| format!("{}: {e}", f.display()))?;
            canonical(&s.kind, &s.name, &s.spec).map_err(|e| format!("{}: {e}", f.display()))?;
            if out.iter().any(|o| o.kind == s.kind && o.name == s.name) {
                return Err(format!(
                    "{}: {} {} is defined twice",
                    f.display(),
                    s.kind,
                    s.name
                ));
            }
            out.push(s);
        }
    }
    Ok(out)
}

/// The server's definitions of `kind`, as the API lists them.
async fn list_kind(api: &Api, kind: &str) -> Result<Vec<Value>, CtlError> {
    let v = match kind {
        "query" => json(&api.call::<ListQueries>(&NoInput {}).await?),
        "schedule" => json(&api.call::<ListSchedules>(&NoInput {}).await?),
        "label_config" => json(&api.call::<ListLabelConfigs>(&NoInput {}).await?),
        "label_query" => json(&api.call::<ListLabelQueries>(&NoInput {}).await?),
        "rule" => json(&api.call::<ListRules>(&NoInput {}).await?),
        "user" => json(&api.call::<ListUsers>(&NoInput {}).await?),
        other => return Err(CtlError::Refused(format!("unknown kind {other:?}"))),
    };
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// The server's definitions as specs, in canonical form.
async fn server_specs(api: &Api, kinds: &[&str]) -> Result<Vec<Spec>, CtlError> {
    let mut out = Vec::new();
    for (kind, key) in KINDS.iter().filter(|k| kinds.contains(&k.0)) {
        for item in list_kind(api, kind).await? {
            let name = cell(&item[*key]);
            let spec = canonical(kind, &name, &item).map_err(CtlError::Failed)?;
            out.push(Spec {
                kind: (*kind).to_owned(),
                name,
                spec,
            });
        }
    }
    Ok(out)
}

/// `want` (a canonical spec) named `name`, as the request of its kind.
fn request<T: serde::de::DeserializeOwned>(
    key: &str,
    name: &str,
    want: &Value,
) -> Result<T, CtlError> {
    let mut o = want.as_object().cloned().unwrap_or_default();
    o.insert(key.to_owned(), json!(name));
    serde_json::from_value(Value::Object(o)).map_err(|e| CtlError::Refused(e.to_string()))
}

/// Creates or replaces one definition.
async fn put_kind(
    api: &Api,
    kind: &str,
    name: &str,
    want: &Value,
    exists: bool,
) -> Result<(), CtlError> {
    match kind {
        "query" => drop(api.send::<PutQuery>(&request("name", name, want)?).await?),
        "schedule" => drop(
            api.send::<PutSchedule>(&request("name", name, want)?)
                .await?,
        ),
        "label_config" => drop(
            api.send::<PutLabelConfig>(&request("label", name, want)?)
                .await?,
        ),
        "label_query" => drop(
            api.send::<PutLabelQuery>(&request("label", name, want)?)
                .await?,
        ),
        "rule" => drop(api.send::<PutRule>(&request("name", name, want)?).await?),
        "user" => {
            // Users are created, then changed (role, disabled).
            let spec: UserSpec = serde_json::from_value(want.clone())
                .map_err(|e| CtlError::Refused(e.to_string()))?;
            if !exists {
                api.send::<CreateUser>(&UserRequest {
                    name: name.to_owned(),
                    role: spec.role,
                })
                .await?;
                if !spec.disabled {
                    return Ok(());
                }
            }
            api.send::<UpdateUser>(&UserUpdate {
                name: name.to_owned(),
                role: Some(spec.role),
                disabled: Some(spec.disabled),
            })
            .await?;
        }
        other => return Err(CtlError::Refused(format!("unknown kind {other:?}"))),
    }
    Ok(())
}

fn changes(old: &Value, new: &Value) -> Vec<String> {
    let (o, n) = (
        old.as_object().cloned().unwrap_or_default(),
        new.as_object().cloned().unwrap_or_default(),
    );
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| o.get(*k) != n.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("-".to_owned(), Value::to_string);
            format!("{k}: {} -> {}", show(o.get(k)), show(n.get(k)))
        })
        .collect()
}

pub async fn apply(api: &Api, paths: &[PathBuf], dry_run: bool) -> Result<String, CtlError> {
    let desired = load_specs(paths).map_err(CtlError::Refused)?;
    let kinds: Vec<&str> = KINDS
        .iter()
        .map(|k| k.0)
        .filter(|k| desired.iter().any(|d| d.kind == *k))
        .collect();
    let current = server_specs(api, &kinds).await?;
    let mut lines = Vec::new();
    let (mut created, mut changed, mut same) = (0, 0, 0);
    for (kind, _) in KINDS {
        for d in desired.iter().filter(|d| d.kind == *kind) {
            let want = canonical(kind, &d.name, &d.spec).map_err(CtlError::Refused)?;
            let have = current
                .iter()
                .find(|c| c.kind == d.kind && c.name == d.name);
            match have {
                Some(h) if h.spec == want => {
                    same += 1;
                    lines.push(format!("= {kind} {}", d.name));
                    continue;
                }
                Some(h) => {
                    changed += 1;
                    lines.push(format!("~ {kind} {}", d.name));
                    lines.extend(
                        changes(&h.spec, &want)
                            .into_iter()
                            .map(|c| format!("    {c}")),
                    );
                }
                None => {
                    created += 1;
                    lines.push(format!("+ {kind} {}", d.name));
                }
            }
            if dry_run {
                continue;
            }
            put_kind(api, kind, &d.name, &want, have.is_some())
                .await
                .map_err(|e| CtlError::Refused(format!("{kind} {}: {e}", d.name)))?;
        }
    }
    lines.push(format!(
        "{created} to create, {changed} to change, {same} unchanged{}",
        if dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        }
    ));
    Ok(lines.join("\n"))
}

pub async fn get_specs(api: &Api, kind: &str, output: &str) -> Result<String, CtlError> {
    let want: &[&str] = match kind {
        "queries" => &["query"],
        "schedules" => &["schedule"],
        "label-configs" => &["label_config"],
        "label-queries" => &["label_query"],
        "rules" => &["rule"],
        "users" => &["user"],
        "all" => &["query", "schedule", "label_config", "label_query", "rule"],
        other => {
            return Err(CtlError::Refused(format!(
                "{other:?}: queries, schedules, label-configs, label-queries, rules, users (admin) or all"
            )));
        }
    };
    let specs: Vec<Spec> = server_specs(api, want).await?;
    match output {
        "json" => Ok(serde_json::to_string_pretty(&specs).unwrap_or_default()),
        "yaml" => {
            let mut out = String::new();
            for s in &specs {
                out.push_str("---\n");
                out.push_str(&serde_norway::to_string(s).map_err(failed)?);
            }
            Ok(out.trim_end().to_owned())
        }
        other => Err(CtlError::Refused(format!("-o {other:?}: yaml or json"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_compare_in_canonical_form() {
        // Defaults filled in: an omitted `removed` is the default `true`.
        let a = canonical(
            "schedule",
            "s",
            &json!({"query": "q", "interval": 60, "labels": ["all"]}),
        );
        let b = canonical(
            "schedule",
            "s",
            &json!({"query": "q", "interval": 60, "labels": ["all"], "removed": true, "snapshot": false, "updated_at": 5}),
        );
        assert_eq!(a, b);
        assert!(canonical("schedule", "s", &json!({"query": "q"})).is_err());
        assert!(canonical("pack", "p", &json!({})).is_err());
        let old = json!({"interval": 60, "query": "q"});
        let new = json!({"interval": 30, "query": "q"});
        assert_eq!(changes(&old, &new), vec!["interval: 60 -> 30".to_owned()]);
    }

    #[test]
    fn unknown_fields_in_any_kind_are_refused_by_name() {
        for (kind, spec) in [
            ("query", json!({"sql": "SELECT 1", "descripton": "typo"})),
            (
                "schedule",
                json!({"query": "q", "interval": 60, "labels": ["all"], "snapshto": true}),
            ),
            ("label_config", json!({"optons": {"logger_tls_period": 10}})),
            (
                "label_config",
                json!({"decorators": {"laod": ["SELECT 1"]}}),
            ),
            ("label_query", json!({"sql": "SELECT 1", "intervall": 60})),
        ] {
            let e = canonical(kind, "x", &spec).expect_err(kind);
            assert!(e.contains("unknown field"), "{kind}: {e}");
        }
    }
}
