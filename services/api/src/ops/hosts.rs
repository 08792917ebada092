//! Hosts: listing (filtered, paged, from the label index when a label or
//! platform names one), details, operator labels, node keys, deletion,
//! the config a host is served and its status logs. Changes go to the
//! host's actor, the only writer of a host record.

use gatehouse_core::HostId;
use gatehouse_core::config::{assemble, load_definitions, validate_label};
use gatehouse_core::model::{Host, LogOrder, ResultCursor, ResultFilter, ResultLog, StatusLog};
use gatehouse_proto::v1 as pb;
use gatehouse_proto::v1::{RotateKeyOp, SetLabelsOp, host_reply, host_request};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::host_order::{HostSort, Key, Sorted};
use super::{Deleted, page_size, pb_limit};
use crate::ApiError;
use crate::admin::{Admin, Caller};
use crate::grpc::{label, object, to_pb_struct};
use crate::registry::{Audit, Entry, Input, IntoPb, Operation, Spec, Verb, entry};
use gatehouse_core::model::Role::{Admin as AdminRole, Observer, Operator};

pub(super) fn entries() -> Vec<Entry> {
    vec![
        entry::<ListHosts>(),
        entry::<GetHost>(),
        entry::<SetHostLabels>(),
        entry::<RotateKey>(),
        entry::<DeleteHost>(),
        entry::<HostConfig>(),
        entry::<HostStatusLogs>(),
        entry::<SearchResults>(),
    ]
}

/// A host as operators see it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HostView {
    #[serde(flatten)]
    pub host: Host,
    pub online: bool,
    /// Every label, built-in ones included.
    pub label_set: Vec<String>,
}

impl IntoPb for HostView {
    type Pb = pb::HostView;
    fn into_pb(self) -> pb::HostView {
        let h = self.host;
        pb::HostView {
            id: h.id.to_string(),
            identity: h.identity,
            host_identifier: h.host_identifier,
            hostname: h.hostname,
            platform: h.platform,
            platform_type: h.platform_type,
            os_name: h.os_name,
            os_version: h.os_version,
            osquery_version: h.osquery_version,
            details: Some(to_pb_struct(h.details.to_map())),
            labels: h.labels,
            label_set: self.label_set,
            enrolled_at: h.enrolled_at,
            last_enrolled_at: h.last_enrolled_at,
            enroll_count: h.enroll_count,
            key_epoch: h.key_epoch,
            key_revoked: h.key_revoked,
            last_seen: h.last_seen,
            last_ip: h.last_ip,
            config_hash: h.config_hash,
            config_generation: h.config_generation,
            online: self.online,
        }
    }
}

impl Admin {
    pub(crate) fn view(&self, host: Host, now: i64) -> HostView {
        let window = i64::try_from(self.cfg.online_window.as_millis()).unwrap_or(i64::MAX);
        HostView {
            online: host.is_online(now, window),
            label_set: host.label_set(),
            host,
        }
    }
}

/// One page of hosts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HostPage {
    pub items: Vec<HostView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
    /// Sorted by hostname or last seen: when that order was made (ms
    /// since 1970; the hosts' values are current, their order is as of
    /// then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sorted_at: Option<i64>,
}

impl IntoPb for HostPage {
    type Pb = pb::ListHostsResponse;
    fn into_pb(self) -> pb::ListHostsResponse {
        pb::ListHostsResponse {
            hosts: self.items.into_iter().map(IntoPb::into_pb).collect(),
            next: self.next,
            sorted_at: self.sorted_at,
        }
    }
}

/// Which hosts to list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostFilter {
    /// Only hosts with this label.
    pub label: Option<String>,
    /// Only this platform (darwin, linux, windows, freebsd).
    pub platform: Option<String>,
    /// Only hosts online (true) or offline (false).
    pub online: Option<bool>,
    /// Only hosts last seen at or after this time (ms since 1970).
    pub seen_after: Option<i64>,
    /// Only hosts last seen before this time (ms since 1970): the stale ones.
    pub seen_before: Option<i64>,
    /// Case-insensitive text in the hostname, host identifier, host id or
    /// last IP.
    pub search: Option<String>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// Hosts per page (default 100, at most 1000).
    pub limit: Option<usize>,
    /// `id` (default), `hostname` (A to Z) or `last_seen` (most recent
    /// first).
    pub sort: Option<HostSort>,
}

impl Input for HostFilter {
    type Pb = pb::ListHostsRequest;
    fn from_pb(r: pb::ListHostsRequest) -> Result<Self, ApiError> {
        Ok(HostFilter {
            label: r.label,
            platform: r.platform,
            online: r.online,
            seen_after: r.seen_after,
            seen_before: r.seen_before,
            search: r.search,
            after: r.after,
            limit: pb_limit(r.limit),
            sort: match r.sort.as_deref() {
                None | Some("" | "id") => None,
                Some("hostname") => Some(HostSort::Hostname),
                Some("last_seen") => Some(HostSort::LastSeen),
                Some(other) => {
                    return Err(ApiError::Invalid {
                        field: "sort",
                        message: format!("sort {other:?} is not one of id, hostname, last_seen"),
                    });
                }
            },
        })
    }
}

impl HostFilter {
    fn keeps(&self, v: &HostView) -> bool {
        let h = &v.host;
        self.label.as_ref().is_none_or(|l| v.label_set.contains(l))
            && self.platform.as_ref().is_none_or(|p| &h.platform == p)
            && self.online.is_none_or(|o| v.online == o)
            && self.seen_after.is_none_or(|t| h.last_seen >= t)
            && self.seen_before.is_none_or(|t| h.last_seen < t)
            && self.search.as_ref().is_none_or(|q| {
                let q = q.to_lowercase();
                [
                    h.hostname.as_str(),
                    h.host_identifier.as_str(),
                    h.id.as_str(),
                    h.last_ip.as_str(),
                ]
                .iter()
                .any(|f| f.to_lowercase().contains(&q))
            })
    }
}

/// A host, by id.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostRef {
    /// The host id (32 hex characters).
    pub id: String,
}

impl Input for HostRef {
    type Pb = pb::HostRef;
    fn from_pb(r: pb::HostRef) -> Result<Self, ApiError> {
        Ok(HostRef { id: r.id })
    }
    fn target(&self) -> String {
        self.id.clone()
    }
}

pub struct ListHosts;

impl Operation for ListHosts {
    const SPEC: Spec = Spec {
        id: "listHosts",
        verb: Verb::Get,
        path: "/api/v1/hosts",
        grpc: "ListHosts",
        summary: "Hosts, filtered and paged",
        role: Observer,
        action: "host.list",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = HostFilter;
    type Resp = HostPage;

    async fn run(a: &Admin, _: &Caller, f: HostFilter) -> Result<HostPage, ApiError> {
        let limit = page_size(f.limit, 100, 1000);
        if let Some(sort) = f.sort.and_then(HostSort::in_memory) {
            return a.list_hosts_sorted(sort, &f, limit).await;
        }
        // A label or platform names an index: list its members instead of
        // paging through every host.
        let indexed = match (&f.label, &f.platform) {
            (Some(l), _) => Some(l.clone()),
            (None, Some(p)) => Some(format!("platform:{p}")),
            (None, None) => None,
        };
        if let Some(label) = indexed {
            return a.list_hosts_with_label(&label, &f, limit).await;
        }
        // The API cursor is the store's page cursor plus how many hosts of
        // that page were already returned, so a filtered page can stop
        // anywhere inside a store page.
        let (mut cursor, mut skip) = match f.after.as_deref() {
            Some(c) => parse_host_cursor(c)?,
            None => (None, 0),
        };
        let now = a.now();
        let mut items = Vec::new();
        // Filters apply while paging, so a page is full unless hosts ran out.
        loop {
            let page = a.store.list_hosts(cursor.as_deref(), limit).await?;
            let count = page.items.len();
            for (i, h) in page.items.into_iter().enumerate().skip(skip) {
                let v = a.view(h, now);
                if f.keeps(&v) {
                    items.push(v);
                    if items.len() == limit {
                        let next = if i + 1 < count {
                            Some(host_cursor(cursor.as_deref(), i + 1))
                        } else {
                            page.next.as_deref().map(|n| host_cursor(Some(n), 0))
                        };
                        return Ok(HostPage {
                            items,
                            next,
                            sorted_at: None,
                        });
                    }
                }
            }
            skip = 0;
            match page.next {
                Some(n) => cursor = Some(n),
                None => {
                    return Ok(HostPage {
                        items,
                        next: None,
                        sorted_at: None,
                    });
                }
            }
        }
    }
}

/// `<store cursor>~<hosts to skip>`; the store cursor is empty for the
/// first page.
fn host_cursor(store_cursor: Option<&str>, skip: usize) -> String {
    format!("{}~{skip}", store_cursor.unwrap_or(""))
}

fn bad_cursor(s: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "invalid cursor {s:?}: pass `next` from a previous page"
    ))
}

fn parse_host_cursor(s: &str) -> Result<(Option<String>, usize), ApiError> {
    let (c, skip) = s.rsplit_once('~').ok_or_else(|| bad_cursor(s))?;
    let skip = skip.parse::<usize>().map_err(|_| bad_cursor(s))?;
    Ok(((!c.is_empty()).then(|| c.to_owned()), skip))
}

impl Admin {
    /// A page in hostname or last-seen order (see [`super::host_order`]):
    /// the hosts after the cursor in that order, read one by one and
    /// filtered with their current values.
    async fn list_hosts_sorted(
        &self,
        sort: Sorted,
        f: &HostFilter,
        limit: usize,
    ) -> Result<HostPage, ApiError> {
        let after = match f.after.as_deref() {
            Some(c) => Some(Key::parse(sort, c).ok_or_else(|| bad_cursor(c))?),
            None => None,
        };
        let order = self.host_order().await?;
        let now = self.now();
        let mut items = Vec::new();
        let mut last: Option<&Key> = None;
        for k in order.after(sort, after.as_ref()) {
            if items.len() == limit {
                return Ok(HostPage {
                    items,
                    next: last.map(Key::cursor),
                    sorted_at: Some(order.at),
                });
            }
            last = Some(k);
            let Some(h) = self.store.get_host(k.host()).await? else {
                continue;
            };
            let v = self.view(h, now);
            if f.keeps(&v) {
                items.push(v);
            }
        }
        Ok(HostPage {
            items,
            next: None,
            sorted_at: Some(order.at),
        })
    }

    /// Hosts carrying `label`, in host-id order, from the label index; the
    /// cursor is the last host id returned (`id:<host id>`).
    async fn list_hosts_with_label(
        &self,
        label: &str,
        f: &HostFilter,
        limit: usize,
    ) -> Result<HostPage, ApiError> {
        let after = match f.after.as_deref() {
            Some(a) => Some(
                a.strip_prefix("id:")
                    .and_then(HostId::parse)
                    .ok_or_else(|| bad_cursor(a))?,
            ),
            None => None,
        };
        let now = self.now();
        let mut items = Vec::new();
        let mut last: Option<HostId> = after;
        // Members a page at a time, filtered with their current values,
        // until the page is full or the label has no more hosts.
        loop {
            let ids = self
                .store
                .hosts_with_label_after(label, last.as_ref(), limit)
                .await?;
            let exhausted = ids.len() < limit;
            for id in ids {
                if items.len() == limit {
                    return Ok(HostPage {
                        items,
                        next: last.map(|l| format!("id:{l}")),
                        sorted_at: None,
                    });
                }
                last = Some(id.clone());
                let Some(h) = self.store.get_host(&id).await? else {
                    continue;
                };
                let v = self.view(h, now);
                if v.label_set.iter().any(|l| l == label) && f.keeps(&v) {
                    items.push(v);
                }
            }
            if exhausted {
                return Ok(HostPage {
                    items,
                    next: None,
                    sorted_at: None,
                });
            }
        }
    }

    pub(crate) async fn host_view(&self, id: &str) -> Result<HostView, ApiError> {
        let id = self.resolve_host(id).await?;
        let h = self
            .store
            .get_host(&id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("host {id}")))?;
        Ok(self.view(h, self.now()))
    }
}

pub struct GetHost;

impl Operation for GetHost {
    const SPEC: Spec = Spec {
        id: "getHost",
        verb: Verb::Get,
        path: "/api/v1/hosts/{id}",
        grpc: "GetHost",
        summary: "One host with its details",
        role: Observer,
        action: "host.get",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = HostRef;
    type Resp = HostView;

    async fn run(a: &Admin, _: &Caller, r: HostRef) -> Result<HostView, ApiError> {
        a.host_view(&r.id).await
    }
}

/// A host's operator labels, replacing the ones it has.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLabels {
    pub id: String,
    pub labels: Vec<String>,
}

impl Input for SetLabels {
    type Pb = pb::SetHostLabelsRequest;
    fn from_pb(r: pb::SetHostLabelsRequest) -> Result<Self, ApiError> {
        Ok(SetLabels {
            id: r.id,
            labels: r.labels,
        })
    }
    fn target(&self) -> String {
        self.id.clone()
    }
    fn detail(&self) -> serde_json::Value {
        serde_json::json!({ "labels": self.labels })
    }
}

pub struct SetHostLabels;

impl Operation for SetHostLabels {
    const SPEC: Spec = Spec {
        id: "setHostLabels",
        verb: Verb::Put,
        path: "/api/v1/hosts/{id}/labels",
        grpc: "SetHostLabels",
        summary: "Set a host's operator labels",
        role: Operator,
        action: "host.set_labels",
        audit: Audit::Calls,
        created: false,
    };
    type Req = SetLabels;
    type Resp = HostView;

    async fn run(a: &Admin, _: &Caller, r: SetLabels) -> Result<HostView, ApiError> {
        let hid = a.resolve_host(&r.id).await?;
        for l in &r.labels {
            validate_label(l)?;
            if l == "all" || l.starts_with("platform:") {
                return Err(ApiError::BadRequest(format!(
                    "label {l:?} is built in and cannot be set"
                )));
            }
        }
        // The new label combination must still yield a publishable config.
        let mut host = a
            .store
            .get_host(&hid)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("host {hid}")))?;
        host.labels = r.labels.clone();
        assemble(
            &host.label_set(),
            &load_definitions(a.store.as_ref()).await?,
        )?;
        a.host_call(
            &hid,
            host_request::Op::SetLabels(SetLabelsOp { labels: r.labels }),
        )
        .await?;
        a.host_view(&r.id).await
    }
}

/// Invalidate a host's node key.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    pub id: String,
    /// Revoke instead of rotate: the host must enroll again.
    #[serde(default)]
    pub revoke: bool,
}

impl Input for RotateKeyRequest {
    type Pb = pb::RotateKeyRequest;
    fn from_pb(r: pb::RotateKeyRequest) -> Result<Self, ApiError> {
        Ok(RotateKeyRequest {
            id: r.id,
            revoke: r.revoke,
        })
    }
    fn target(&self) -> String {
        self.id.clone()
    }
    fn action(&self, declared: &'static str) -> &'static str {
        if self.revoke {
            "host.revoke_key"
        } else {
            declared
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct KeyChange {
    pub host_id: HostId,
    pub epoch: u64,
    pub revoked: bool,
}

impl IntoPb for KeyChange {
    type Pb = pb::KeyChange;
    fn into_pb(self) -> pb::KeyChange {
        pb::KeyChange {
            host_id: self.host_id.to_string(),
            epoch: self.epoch,
            revoked: self.revoked,
        }
    }
}

pub struct RotateKey;

impl Operation for RotateKey {
    const SPEC: Spec = Spec {
        id: "rotateKey",
        verb: Verb::Post,
        path: "/api/v1/hosts/{id}/rotate_key",
        grpc: "RotateKey",
        summary: "Invalidate a host's node key (rotate, or revoke)",
        role: AdminRole,
        action: "host.rotate_key",
        audit: Audit::Calls,
        created: false,
    };
    type Req = RotateKeyRequest;
    type Resp = KeyChange;

    async fn run(a: &Admin, _: &Caller, r: RotateKeyRequest) -> Result<KeyChange, ApiError> {
        let hid = a.resolve_host(&r.id).await?;
        let op = host_request::Op::RotateKey(RotateKeyOp { revoke: r.revoke });
        match a.host_call(&hid, op).await? {
            host_reply::Result::Key(k) => Ok(KeyChange {
                host_id: hid,
                epoch: k.epoch,
                revoked: r.revoke,
            }),
            _ => Err(ApiError::Unavailable(
                "unexpected reply to key rotation".into(),
            )),
        }
    }
}

pub struct DeleteHost;

impl Operation for DeleteHost {
    const SPEC: Spec = Spec {
        id: "deleteHost",
        verb: Verb::Delete,
        path: "/api/v1/hosts/{id}",
        grpc: "DeleteHost",
        summary: "Forget a host (its agent must enroll again; logs stay until retention)",
        role: AdminRole,
        action: "host.delete",
        audit: Audit::Calls,
        created: false,
    };
    type Req = HostRef;
    type Resp = Deleted;

    async fn run(a: &Admin, _: &Caller, r: HostRef) -> Result<Deleted, ApiError> {
        let hid = a.resolve_host(&r.id).await?;
        a.host_call(&hid, host_request::Op::DeleteHost(Default::default()))
            .await?;
        Ok(Deleted)
    }
}

impl IntoPb for serde_json::Value {
    type Pb = prost_types::Struct;
    fn into_pb(self) -> prost_types::Struct {
        object(self)
    }
}

pub struct HostConfig;

impl Operation for HostConfig {
    const SPEC: Spec = Spec {
        id: "hostConfig",
        verb: Verb::Get,
        path: "/api/v1/hosts/{id}/config",
        grpc: "HostConfig",
        summary: "The config a host is served",
        role: Observer,
        action: "host.config",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = HostRef;
    type Resp = serde_json::Value;

    async fn run(a: &Admin, _: &Caller, r: HostRef) -> Result<serde_json::Value, ApiError> {
        let h = a.host_view(&r.id).await?;
        let defs = load_definitions(a.store.as_ref()).await?;
        let assembled = assemble(&h.label_set, &defs)?;
        serde_json::from_slice(&assembled.bytes).map_err(|e| ApiError::Unavailable(e.to_string()))
    }
}

/// A host's status logs in a time window.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostLogs {
    pub id: String,
    /// Milliseconds since 1970, inclusive (default: from the start).
    pub since: Option<i64>,
    /// Milliseconds since 1970, exclusive (default: until now).
    pub until: Option<i64>,
    /// Most lines (default 1000, at most 10000).
    pub limit: Option<usize>,
}

impl Input for HostLogs {
    type Pb = pb::HostLogsRequest;
    fn from_pb(r: pb::HostLogsRequest) -> Result<Self, ApiError> {
        Ok(HostLogs {
            id: r.id,
            since: Some(r.since),
            until: (r.until != 0).then_some(r.until),
            limit: pb_limit(r.limit),
        })
    }
    fn target(&self) -> String {
        self.id.clone()
    }
}

impl IntoPb for Vec<StatusLog> {
    type Pb = pb::StatusLogs;
    fn into_pb(self) -> pb::StatusLogs {
        pb::StatusLogs {
            logs: self
                .into_iter()
                .map(|l| pb::StatusLog {
                    host_id: l.host_id.to_string(),
                    unix_time: l.unix_time,
                    severity: l.severity,
                    message: l.message,
                    line_id: l.line_id,
                    received_at: l.received_at,
                    line: Some(object(l.line.into_value())),
                })
                .collect(),
        }
    }
}

pub struct HostStatusLogs;

impl Operation for HostStatusLogs {
    const SPEC: Spec = Spec {
        id: "hostStatusLogs",
        verb: Verb::Get,
        path: "/api/v1/hosts/{id}/status_logs",
        grpc: "HostStatusLogs",
        summary: "A host's status logs",
        role: Observer,
        action: "host.status_logs",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = HostLogs;
    type Resp = Vec<StatusLog>;

    async fn run(a: &Admin, _: &Caller, r: HostLogs) -> Result<Vec<StatusLog>, ApiError> {
        let hid = a.resolve_host(&r.id).await?;
        let limit = page_size(r.limit, 1000, 10_000);
        let (since, until) = (r.since.unwrap_or(0), r.until.unwrap_or(i64::MAX));
        if since > until {
            return Err(ApiError::BadRequest("since must not be after until".into()));
        }
        // Lines carry whole seconds of agent time.
        Ok(a.store
            .query_status(&hid, ms_to_secs(since), ms_to_secs(until), limit)
            .await?)
    }
}

/// Stored result logs by host, query and time window.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultSearch {
    /// Host id.
    pub host: Option<String>,
    /// Scheduled query name.
    pub name: Option<String>,
    /// Milliseconds since 1970, inclusive (compared with the line's agent
    /// time, which osquery gives in whole seconds).
    pub since: Option<i64>,
    /// Milliseconds since 1970, exclusive.
    pub until: Option<i64>,
    /// Most lines (default 1000, at most 10000).
    pub limit: Option<usize>,
    /// `oldest` (default) or `newest` first.
    pub order: Option<ResultOrder>,
    /// The previous page's `next`.
    pub after: Option<String>,
}

/// Which result lines come first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResultOrder {
    Oldest,
    Newest,
}

impl Input for ResultSearch {
    type Pb = pb::ResultSearch;
    fn from_pb(r: pb::ResultSearch) -> Result<Self, ApiError> {
        let order = match r.order.as_deref() {
            None | Some("") => None,
            Some("oldest") => Some(ResultOrder::Oldest),
            Some("newest") => Some(ResultOrder::Newest),
            Some(o) => {
                return Err(ApiError::BadRequest(format!(
                    "order: {o:?}: expected oldest or newest"
                )));
            }
        };
        Ok(ResultSearch {
            host: r.host_id,
            name: r.name,
            since: Some(r.since),
            until: (r.until != 0).then_some(r.until),
            limit: pb_limit(r.limit),
            order,
            after: r.after,
        })
    }
}

/// One page of result lines.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ResultPage {
    pub items: Vec<ResultLog>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

impl IntoPb for ResultPage {
    type Pb = pb::ResultLogs;
    fn into_pb(self) -> pb::ResultLogs {
        pb::ResultLogs {
            logs: self.items.into_iter().map(result_pb).collect(),
            next: self.next,
        }
    }
}

fn result_pb(r: ResultLog) -> pb::ResultLog {
    pb::ResultLog {
        host_id: r.host_id.to_string(),
        name: r.name,
        unix_time: r.unix_time,
        kind: label(r.kind),
        action: r.action,
        rows: r.rows,
        line_id: r.line_id,
        received_at: r.received_at,
        line: Some(object(r.line.into_value())),
    }
}

/// A millisecond bound as the first whole second at or after it (lines
/// carry whole seconds: a line at second `s` is at `s * 1000` ms).
fn ms_to_secs(ms: i64) -> i64 {
    if ms == i64::MAX {
        i64::MAX
    } else {
        let ms = ms.max(0);
        ms / 1000 + i64::from(ms % 1000 != 0)
    }
}

pub struct SearchResults;

impl Operation for SearchResults {
    const SPEC: Spec = Spec {
        id: "searchResults",
        verb: Verb::Get,
        path: "/api/v1/results",
        grpc: "SearchResults",
        summary: "Stored result logs by host, query and time window",
        role: Observer,
        action: "results.search",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = ResultSearch;
    type Resp = ResultPage;

    async fn run(a: &Admin, _: &Caller, r: ResultSearch) -> Result<ResultPage, ApiError> {
        let host_id = match r.host.as_deref() {
            Some(h) => Some(a.resolve_host(h).await?),
            None => None,
        };
        let since = r.since.unwrap_or(0);
        let until = r.until.filter(|u| *u > 0).unwrap_or(i64::MAX);
        if since > until {
            return Err(ApiError::BadRequest("since must not be after until".into()));
        }
        if host_id.is_none() && r.name.is_none() {
            return Err(ApiError::BadRequest(
                "give a host_id, a query name, or both".into(),
            ));
        }
        let after = match r.after.as_deref() {
            Some(c) => Some(ResultCursor::decode(c).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "after: {c:?} is not a cursor (pass a page's `next` as it came)"
                ))
            })?),
            None => None,
        };
        let limit = page_size(r.limit, 1000, 10_000);
        let f = ResultFilter {
            host_id,
            name: r.name,
            since: ms_to_secs(since),
            until: ms_to_secs(until),
            // One more than asked: whether there is a next page.
            limit: limit + 1,
            order: match r.order {
                Some(ResultOrder::Newest) => LogOrder::NewestFirst,
                Some(ResultOrder::Oldest) | None => LogOrder::OldestFirst,
            },
            after,
        };
        let mut items = a.store.query_results(&f).await?;
        let more = items.len() > limit;
        items.truncate(limit);
        let next = more
            .then(|| items.last().map(|l| ResultCursor::of(l).encode()))
            .flatten();
        Ok(ResultPage { items, next })
    }
}
