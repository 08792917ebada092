//! Config definitions: saved queries, scheduled queries, label configs
//! (options, decorators, file paths) and label queries (dynamic labels).
//! Every change is validated against every label set in the fleet (a
//! config must stay publishable, under the agent's 1 MiB limit) before it
//! is saved, then announced as a new config generation.

use std::collections::BTreeMap;

use gatehouse_core::config::{
    validate_label_config, validate_label_query, validate_query, validate_schedule,
};
use gatehouse_core::model::Role::{Observer, Operator};
use gatehouse_core::model::{Decorators, LabelConfig, LabelQuery, Query, Schedule};
use gatehouse_proto::v1 as pb;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Deleted, NoInput};
use crate::ApiError;
use crate::admin::{Admin, Caller, not_found_if_false};
use crate::grpc::{from_pb_struct, to_pb_struct};
use crate::registry::{Audit, Entry, Input, IntoPb, Operation, Spec, Verb, entry};

pub(super) fn entries() -> Vec<Entry> {
    vec![
        entry::<ListQueries>(),
        entry::<PutQuery>(),
        entry::<DeleteQuery>(),
        entry::<ListSchedules>(),
        entry::<PutSchedule>(),
        entry::<DeleteSchedule>(),
        entry::<ListLabelConfigs>(),
        entry::<PutLabelConfig>(),
        entry::<DeleteLabelConfig>(),
        entry::<ListLabelQueries>(),
        entry::<PutLabelQuery>(),
        entry::<DeleteLabelQuery>(),
    ]
}

/// A definition by name.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NameRef {
    pub name: String,
}

impl Input for NameRef {
    type Pb = pb::NameRef;
    fn from_pb(r: pb::NameRef) -> Result<Self, ApiError> {
        Ok(NameRef { name: r.name })
    }
    fn target(&self) -> String {
        self.name.clone()
    }
}

/// A definition by label.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelRef {
    pub label: String,
}

impl Input for LabelRef {
    type Pb = pb::NameRef;
    fn from_pb(r: pb::NameRef) -> Result<Self, ApiError> {
        Ok(LabelRef { label: r.name })
    }
    fn target(&self) -> String {
        self.label.clone()
    }
}

// ---- saved queries ----

impl IntoPb for Query {
    type Pb = pb::Query;
    fn into_pb(self) -> pb::Query {
        pb::Query {
            name: self.name,
            sql: self.sql,
            description: self.description,
            updated_at: self.updated_at,
        }
    }
}

impl IntoPb for Vec<Query> {
    type Pb = pb::Queries;
    fn into_pb(self) -> pb::Queries {
        pb::Queries {
            queries: self.into_iter().map(IntoPb::into_pb).collect(),
        }
    }
}

/// A saved query as PUT to `/api/v1/queries/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryDef {
    pub name: String,
    pub sql: String,
    #[serde(default)]
    pub description: String,
}

impl Input for QueryDef {
    type Pb = pb::Query;
    fn from_pb(q: pb::Query) -> Result<Self, ApiError> {
        Ok(QueryDef {
            name: q.name,
            sql: q.sql,
            description: q.description,
        })
    }
    fn target(&self) -> String {
        self.name.clone()
    }
    fn detail(&self) -> serde_json::Value {
        serde_json::json!({ "sql": self.sql })
    }
}

pub struct ListQueries;

impl Operation for ListQueries {
    const SPEC: Spec = Spec {
        id: "listQueries",
        verb: Verb::Get,
        path: "/api/v1/queries",
        grpc: "ListQueries",
        summary: "Saved queries",
        role: Observer,
        action: "query.list",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = NoInput;
    type Resp = Vec<Query>;

    async fn run(a: &Admin, _: &Caller, _: NoInput) -> Result<Vec<Query>, ApiError> {
        Ok(a.store.list_queries().await?)
    }
}

pub struct PutQuery;

impl Operation for PutQuery {
    const SPEC: Spec = Spec {
        id: "putQuery",
        verb: Verb::Put,
        path: "/api/v1/queries/{name}",
        grpc: "PutQuery",
        summary: "Create or replace a saved query",
        role: Operator,
        action: "query.put",
        audit: Audit::Calls,
        created: false,
    };
    type Req = QueryDef;
    type Resp = Query;

    async fn run(a: &Admin, _: &Caller, d: QueryDef) -> Result<Query, ApiError> {
        let q = Query {
            name: d.name,
            sql: d.sql,
            description: d.description,
            updated_at: a.now(),
        };
        validate_query(&q)?;
        let stored = q.clone();
        a.change_definitions(
            |defs| {
                defs.queries.insert(q.name.clone(), q.clone());
                Ok(())
            },
            || async { Ok(a.store.put_query(&stored).await?) },
        )
        .await?;
        Ok(q)
    }
}

pub struct DeleteQuery;

impl Operation for DeleteQuery {
    const SPEC: Spec = Spec {
        id: "deleteQuery",
        verb: Verb::Delete,
        path: "/api/v1/queries/{name}",
        grpc: "DeleteQuery",
        summary: "Delete a saved query",
        role: Operator,
        action: "query.delete",
        audit: Audit::Calls,
        created: false,
    };
    type Req = NameRef;
    type Resp = Deleted;

    async fn run(a: &Admin, _: &Caller, r: NameRef) -> Result<Deleted, ApiError> {
        let name = r.name;
        let users: Vec<String> = a
            .store
            .list_schedules()
            .await?
            .into_iter()
            .filter(|s| s.query == name)
            .map(|s| s.name)
            .collect();
        if !users.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "query {name:?} is used by schedules {users:?}; delete those first"
            )));
        }
        not_found_if_false(a.store.delete_query(&name).await?, format!("query {name}"))?;
        Ok(Deleted)
    }
}

// ---- scheduled queries ----

impl IntoPb for Schedule {
    type Pb = pb::Schedule;
    fn into_pb(self) -> pb::Schedule {
        pb::Schedule {
            name: self.name,
            query: self.query,
            interval: self.interval,
            snapshot: self.snapshot,
            removed: self.removed,
            platform: self.platform,
            version: self.version,
            shard: self.shard.map(u32::from),
            pack: self.pack,
            labels: self.labels,
            updated_at: self.updated_at,
        }
    }
}

impl IntoPb for Vec<Schedule> {
    type Pb = pb::Schedules;
    fn into_pb(self) -> pb::Schedules {
        pb::Schedules {
            schedules: self.into_iter().map(IntoPb::into_pb).collect(),
        }
    }
}

fn yes() -> bool {
    true
}

/// A scheduled query as PUT to `/api/v1/schedules/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDef {
    /// Name the agent logs under (inside `pack` when one is set).
    pub name: String,
    /// Name of the saved query.
    pub query: String,
    /// Seconds between runs.
    pub interval: u32,
    #[serde(default)]
    pub snapshot: bool,
    #[serde(default = "yes")]
    pub removed: bool,
    pub platform: Option<String>,
    pub version: Option<String>,
    /// Percentage of hosts that run it (1-100).
    pub shard: Option<u8>,
    /// Pack the query is delivered in; absent: `schedule`.
    pub pack: Option<String>,
    /// Hosts with any of these labels run it.
    pub labels: Vec<String>,
}

impl Input for ScheduleDef {
    type Pb = pb::Schedule;
    fn from_pb(s: pb::Schedule) -> Result<Self, ApiError> {
        let shard = match s.shard {
            Some(p) => Some(u8::try_from(p).map_err(|_| {
                ApiError::BadRequest(format!("shard {p} is not a percentage (1-100)"))
            })?),
            None => None,
        };
        Ok(ScheduleDef {
            name: s.name,
            query: s.query,
            interval: s.interval,
            snapshot: s.snapshot,
            removed: s.removed,
            platform: s.platform,
            version: s.version,
            shard,
            pack: s.pack,
            labels: s.labels,
        })
    }
    fn target(&self) -> String {
        self.name.clone()
    }
    fn detail(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

pub struct ListSchedules;

impl Operation for ListSchedules {
    const SPEC: Spec = Spec {
        id: "listSchedules",
        verb: Verb::Get,
        path: "/api/v1/schedules",
        grpc: "ListSchedules",
        summary: "Scheduled queries",
        role: Observer,
        action: "schedule.list",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = NoInput;
    type Resp = Vec<Schedule>;

    async fn run(a: &Admin, _: &Caller, _: NoInput) -> Result<Vec<Schedule>, ApiError> {
        Ok(a.store.list_schedules().await?)
    }
}

pub struct PutSchedule;

impl Operation for PutSchedule {
    const SPEC: Spec = Spec {
        id: "putSchedule",
        verb: Verb::Put,
        path: "/api/v1/schedules/{name}",
        grpc: "PutSchedule",
        summary: "Create or replace a scheduled query",
        role: Operator,
        action: "schedule.put",
        audit: Audit::Calls,
        created: false,
    };
    type Req = ScheduleDef;
    type Resp = Schedule;

    async fn run(a: &Admin, _: &Caller, d: ScheduleDef) -> Result<Schedule, ApiError> {
        let s = Schedule {
            name: d.name,
            query: d.query,
            interval: d.interval,
            snapshot: d.snapshot,
            removed: d.removed,
            platform: d.platform,
            version: d.version,
            shard: d.shard,
            pack: d.pack,
            labels: d.labels,
            updated_at: a.now(),
        };
        let stored = s.clone();
        a.change_definitions(
            |defs| {
                validate_schedule(&s, defs)?;
                defs.schedules.insert(s.name.clone(), s.clone());
                Ok(())
            },
            || async { Ok(a.store.put_schedule(&stored).await?) },
        )
        .await?;
        Ok(s)
    }
}

pub struct DeleteSchedule;

impl Operation for DeleteSchedule {
    const SPEC: Spec = Spec {
        id: "deleteSchedule",
        verb: Verb::Delete,
        path: "/api/v1/schedules/{name}",
        grpc: "DeleteSchedule",
        summary: "Delete a scheduled query",
        role: Operator,
        action: "schedule.delete",
        audit: Audit::Calls,
        created: false,
    };
    type Req = NameRef;
    type Resp = Deleted;

    async fn run(a: &Admin, _: &Caller, r: NameRef) -> Result<Deleted, ApiError> {
        let name = r.name;
        a.delete_definition(
            format!("schedule {name}"),
            |d| d.schedules.remove(&name).is_some(),
            || a.store.delete_schedule(&name),
        )
        .await?;
        Ok(Deleted)
    }
}

// ---- label configs ----

fn string_lists(m: BTreeMap<String, Vec<String>>) -> BTreeMap<String, pb::StringList> {
    m.into_iter()
        .map(|(k, values)| (k, pb::StringList { values }))
        .collect()
}

fn from_string_lists(m: BTreeMap<String, pb::StringList>) -> BTreeMap<String, Vec<String>> {
    m.into_iter().map(|(k, l)| (k, l.values)).collect()
}

impl IntoPb for LabelConfig {
    type Pb = pb::LabelConfig;
    fn into_pb(self) -> pb::LabelConfig {
        pb::LabelConfig {
            label: self.label,
            options: Some(to_pb_struct(self.options)),
            decorators: Some(pb::Decorators {
                load: self.decorators.load,
                always: self.decorators.always,
                interval: string_lists(self.decorators.interval),
            }),
            file_paths: string_lists(self.file_paths),
            updated_at: self.updated_at,
        }
    }
}

impl IntoPb for Vec<LabelConfig> {
    type Pb = pb::LabelConfigs;
    fn into_pb(self) -> pb::LabelConfigs {
        pb::LabelConfigs {
            configs: self.into_iter().map(IntoPb::into_pb).collect(),
        }
    }
}

/// A label's config as PUT to `/api/v1/label_configs/{label}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelConfigDef {
    pub label: String,
    /// osquery options (flags) for hosts with the label.
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub decorators: Decorators,
    /// FIM category -> paths.
    #[serde(default)]
    pub file_paths: BTreeMap<String, Vec<String>>,
}

impl Input for LabelConfigDef {
    type Pb = pb::LabelConfig;
    fn from_pb(l: pb::LabelConfig) -> Result<Self, ApiError> {
        let d = l.decorators.unwrap_or_default();
        Ok(LabelConfigDef {
            label: l.label,
            options: l.options.map(from_pb_struct).unwrap_or_default(),
            decorators: Decorators {
                load: d.load,
                always: d.always,
                interval: from_string_lists(d.interval),
            },
            file_paths: from_string_lists(l.file_paths),
        })
    }
    fn target(&self) -> String {
        self.label.clone()
    }
    fn detail(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

pub struct ListLabelConfigs;

impl Operation for ListLabelConfigs {
    const SPEC: Spec = Spec {
        id: "listLabelConfigs",
        verb: Verb::Get,
        path: "/api/v1/label_configs",
        grpc: "ListLabelConfigs",
        summary: "Options, decorators and file paths by label",
        role: Observer,
        action: "label_config.list",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = NoInput;
    type Resp = Vec<LabelConfig>;

    async fn run(a: &Admin, _: &Caller, _: NoInput) -> Result<Vec<LabelConfig>, ApiError> {
        Ok(a.store.list_label_configs().await?)
    }
}

pub struct PutLabelConfig;

impl Operation for PutLabelConfig {
    const SPEC: Spec = Spec {
        id: "putLabelConfig",
        verb: Verb::Put,
        path: "/api/v1/label_configs/{label}",
        grpc: "PutLabelConfig",
        summary: "Create or replace a label's config",
        role: Operator,
        action: "label_config.put",
        audit: Audit::Calls,
        created: false,
    };
    type Req = LabelConfigDef;
    type Resp = LabelConfig;

    async fn run(a: &Admin, _: &Caller, d: LabelConfigDef) -> Result<LabelConfig, ApiError> {
        let c = LabelConfig {
            label: d.label,
            options: d.options,
            decorators: d.decorators,
            file_paths: d.file_paths,
            updated_at: a.now(),
        };
        validate_label_config(&c)?;
        let stored = c.clone();
        a.change_definitions(
            |defs| {
                defs.label_configs.insert(c.label.clone(), c.clone());
                Ok(())
            },
            || async { Ok(a.store.put_label_config(&stored).await?) },
        )
        .await?;
        Ok(c)
    }
}

pub struct DeleteLabelConfig;

impl Operation for DeleteLabelConfig {
    const SPEC: Spec = Spec {
        id: "deleteLabelConfig",
        verb: Verb::Delete,
        path: "/api/v1/label_configs/{label}",
        grpc: "DeleteLabelConfig",
        summary: "Delete a label's config",
        role: Operator,
        action: "label_config.delete",
        audit: Audit::Calls,
        created: false,
    };
    type Req = LabelRef;
    type Resp = Deleted;

    async fn run(a: &Admin, _: &Caller, r: LabelRef) -> Result<Deleted, ApiError> {
        let label = r.label;
        a.delete_definition(
            format!("label config {label}"),
            |d| d.label_configs.remove(&label).is_some(),
            || a.store.delete_label_config(&label),
        )
        .await?;
        Ok(Deleted)
    }
}

// ---- label queries (dynamic labels) ----

impl IntoPb for LabelQuery {
    type Pb = pb::LabelQuery;
    fn into_pb(self) -> pb::LabelQuery {
        pb::LabelQuery {
            label: self.label,
            sql: self.sql,
            interval: self.interval,
            platforms: self.platforms,
            description: self.description,
            updated_at: self.updated_at,
        }
    }
}

impl IntoPb for Vec<LabelQuery> {
    type Pb = pb::LabelQueries;
    fn into_pb(self) -> pb::LabelQueries {
        pb::LabelQueries {
            label_queries: self.into_iter().map(IntoPb::into_pb).collect(),
        }
    }
}

/// A label query as PUT to `/api/v1/label_queries/{label}`: hosts whose
/// answer has rows carry the label.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelQueryDef {
    pub label: String,
    pub sql: String,
    /// Seconds between evaluations on each host (default 3600, at least 60).
    pub interval: Option<u32>,
    /// Only hosts of these platform families are asked (none: all).
    #[serde(default)]
    pub platforms: Vec<String>,
    #[serde(default)]
    pub description: String,
}

impl Input for LabelQueryDef {
    type Pb = pb::LabelQuery;
    fn from_pb(q: pb::LabelQuery) -> Result<Self, ApiError> {
        Ok(LabelQueryDef {
            label: q.label,
            sql: q.sql,
            interval: (q.interval != 0).then_some(q.interval),
            platforms: q.platforms,
            description: q.description,
        })
    }
    fn target(&self) -> String {
        self.label.clone()
    }
    fn detail(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

pub struct ListLabelQueries;

impl Operation for ListLabelQueries {
    const SPEC: Spec = Spec {
        id: "listLabelQueries",
        verb: Verb::Get,
        path: "/api/v1/label_queries",
        grpc: "ListLabelQueries",
        summary: "Dynamic labels: the queries hosts answer to join them",
        role: Observer,
        action: "label_query.list",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = NoInput;
    type Resp = Vec<LabelQuery>;

    async fn run(a: &Admin, _: &Caller, _: NoInput) -> Result<Vec<LabelQuery>, ApiError> {
        Ok(a.store.list_label_queries().await?)
    }
}

pub struct PutLabelQuery;

impl Operation for PutLabelQuery {
    const SPEC: Spec = Spec {
        id: "putLabelQuery",
        verb: Verb::Put,
        path: "/api/v1/label_queries/{label}",
        grpc: "PutLabelQuery",
        summary: "Create or replace a dynamic label (hosts whose answer has rows carry it)",
        role: Operator,
        action: "label_query.put",
        audit: Audit::Calls,
        created: false,
    };
    type Req = LabelQueryDef;
    type Resp = LabelQuery;

    async fn run(a: &Admin, _: &Caller, d: LabelQueryDef) -> Result<LabelQuery, ApiError> {
        let mut q = LabelQuery {
            label: d.label,
            sql: d.sql,
            interval: d.interval.unwrap_or(3600),
            platforms: d.platforms,
            description: d.description,
            updated_at: a.now(),
        };
        validate_label_query(&q)?;
        q.platforms.sort();
        q.platforms.dedup();
        let stored = q.clone();
        a.change_definitions(
            |defs| {
                defs.label_queries.insert(q.label.clone(), q.clone());
                Ok(())
            },
            || async { Ok(a.store.put_label_query(&stored).await?) },
        )
        .await?;
        Ok(q)
    }
}

pub struct DeleteLabelQuery;

impl Operation for DeleteLabelQuery {
    const SPEC: Spec = Spec {
        id: "deleteLabelQuery",
        verb: Verb::Delete,
        path: "/api/v1/label_queries/{label}",
        grpc: "DeleteLabelQuery",
        summary: "Delete a dynamic label (hosts leave it at their next poll)",
        role: Operator,
        action: "label_query.delete",
        audit: Audit::Calls,
        created: false,
    };
    type Req = LabelRef;
    type Resp = Deleted;

    async fn run(a: &Admin, _: &Caller, r: LabelRef) -> Result<Deleted, ApiError> {
        let label = r.label;
        a.delete_definition(
            format!("label query {label}"),
            |d| d.label_queries.remove(&label).is_some(),
            || a.store.delete_label_query(&label),
        )
        .await?;
        Ok(Deleted)
    }
}
