//! `gatehouse ctl`: the operator API from the command line. Human tables by
//! default, `--json` for scripts; errors are the API's own messages with a
//! non-zero exit (2 for a refused request, 1 when the server cannot be
//! reached).
//!
//! Split by concern: [`args`] (the command line), [`client`] (typed calls
//! of the API's declared operations), [`render`] (tables and JSON), the
//! commands here, [`query`] (`ctl query run`) and [`gitops`] (`apply`,
//! `get`).

pub mod args;
pub mod client;
pub mod gitops;
pub mod query;
pub mod render;

use gatehouse_api::ops::NoInput;
use gatehouse_api::ops::audit::{AuditFilter, ListAudit};
use gatehouse_api::ops::campaigns::{
    CampaignRef, CampaignResults, CancelCampaign, GetCampaign, ListCampaigns, ListLimit,
};
use gatehouse_api::ops::carves::{CarveRef, DownloadCarve, GetCarve, ListCarves};
use gatehouse_api::ops::definitions::{
    DeleteLabelConfig, DeleteLabelQuery, DeleteQuery, DeleteSchedule, LabelRef, ListLabelConfigs,
    ListLabelQueries, ListQueries, ListSchedules, NameRef, PutQuery, PutSchedule, QueryDef,
    ScheduleDef,
};
use gatehouse_api::ops::host_order::HostSort;
use gatehouse_api::ops::hosts::{
    DeleteHost, GetHost, HostConfig, HostFilter, HostRef, ListHosts, ResultOrder, ResultSearch,
    SearchResults, SetHostLabels, SetLabels,
};
use gatehouse_api::ops::identity::{
    CreateEnrollSecret, CreateToken, CreateUser, EnrollSecretRequest, IdRef, InviteUser,
    ListEnrollSecrets, ListTokens, ListUsers, PasswordRequest, RevokeEnrollSecret, RevokeToken,
    SecretRef, SetPassword, TokenRequest, UpdateUser, UserRequest, UserUpdate, Whoami,
};
use gatehouse_api::ops::rules::{
    AlertPage, DeadLetterRef, DeleteDeadLetter, DeleteRule, ListAlerts, ListDeadLetters, ListRules,
    RedriveDeadLetter, RuleSwitch, SetRuleEnabled,
};
use gatehouse_core::model::Role;
use serde_json::{Value, json};

pub use args::*;
use client::Api;
pub use query::sse_events;
use render::{cell, json, show};

/// What went wrong, and the exit code it deserves.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The API refused the request (its message).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
    /// A live query ran, but not every target answered with rows: the
    /// answers (`output`, for stdout) and what is missing.
    #[error("{why}")]
    Incomplete {
        output: String,
        why: String,
        outcome: Incomplete,
    },
}

/// How a live query fell short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incomplete {
    /// Some hosts answered with an error (e.g. the SQL failed there).
    SomeFailed,
    /// Some hosts never answered within the wait.
    SomeSilent,
    Both,
}

impl CtlError {
    /// 1: the command could not be carried out; 2: the API refused it;
    /// 3: some hosts failed; 4: some never answered; 5: both.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Refused(_) => 2,
            CtlError::Failed(_) => 1,
            CtlError::Incomplete { outcome, .. } => match outcome {
                Incomplete::SomeFailed => 3,
                Incomplete::SomeSilent => 4,
                Incomplete::Both => 5,
            },
        }
    }
}

fn failed(e: impl std::fmt::Display) -> CtlError {
    CtlError::Failed(e.to_string())
}

fn role(s: &str) -> Result<Role, CtlError> {
    Role::parse(s).ok_or_else(|| {
        CtlError::Refused(format!("role {s:?}: expected observer, operator or admin"))
    })
}

const HOST_COLS: &[&str] = &[
    "id",
    "hostname",
    "platform",
    "online",
    "last_seen",
    "label_set",
];

/// Runs one `ctl` command; what to print on success.
pub async fn run(a: CtlArgs) -> Result<String, CtlError> {
    let api = Api::new(&a)?;
    let j = a.json;
    let none = NoInput {};
    Ok(match a.what {
        What::Whoami => show(
            j,
            &json(&api.call::<Whoami>(&none).await?),
            &["name", "role"],
        ),
        What::Hosts(Hosts::List {
            label,
            platform,
            online,
            search,
            silent_for,
            limit,
            after,
            sort,
        }) => {
            let seen_before = silent_for.map(minutes_ago);
            let sort = match sort.as_deref() {
                Some("hostname") => Some(HostSort::Hostname),
                Some("last_seen") => Some(HostSort::LastSeen),
                _ => None,
            };
            let page = api
                .call::<ListHosts>(&HostFilter {
                    label,
                    platform,
                    online,
                    search,
                    seen_before,
                    limit: Some(limit),
                    after,
                    sort,
                    ..HostFilter::default()
                })
                .await?;
            more(page.next.as_deref());
            if j {
                show(true, &json(&page), &[])
            } else {
                show(false, &json(&page.items), HOST_COLS)
            }
        }
        What::Hosts(Hosts::Delete { id }) => {
            api.send::<DeleteHost>(&HostRef { id: id.clone() }).await?;
            format!("host {id} deleted")
        }
        What::Hosts(Hosts::Get { id }) => {
            render::details(j, &json(&api.call::<GetHost>(&HostRef { id }).await?))
        }
        What::Hosts(Hosts::Config { id }) => {
            serde_json::to_string_pretty(&api.call::<HostConfig>(&HostRef { id }).await?)
                .unwrap_or_default()
        }
        What::Hosts(Hosts::Label { id, labels }) => show(
            j,
            &json(&api.call::<SetHostLabels>(&SetLabels { id, labels }).await?),
            HOST_COLS,
        ),
        What::Queries(Queries::List) => show(
            j,
            &json(&api.call::<ListQueries>(&none).await?),
            &["name", "sql", "description"],
        ),
        What::Queries(Queries::Put {
            name,
            sql,
            description,
        }) => show(
            j,
            &json(
                &api.call::<PutQuery>(&QueryDef {
                    name,
                    sql,
                    description,
                })
                .await?,
            ),
            &["name", "sql", "description"],
        ),
        What::Queries(Queries::Delete { name }) => {
            api.send::<DeleteQuery>(&NameRef { name: name.clone() })
                .await?;
            format!("deleted query {name}")
        }
        What::Schedules(Schedules::List) => show(
            j,
            &json(&api.call::<ListSchedules>(&none).await?),
            &[
                "name", "query", "interval", "snapshot", "pack", "platform", "labels",
            ],
        ),
        What::Schedules(Schedules::Put {
            name,
            query,
            interval,
            snapshot,
            no_removed,
            labels,
            pack,
            platform,
            version,
            shard,
        }) => show(
            j,
            &json(
                &api.call::<PutSchedule>(&ScheduleDef {
                    name,
                    query,
                    interval,
                    snapshot,
                    removed: !no_removed,
                    platform,
                    version,
                    shard,
                    pack,
                    labels,
                })
                .await?,
            ),
            &[
                "name", "query", "interval", "snapshot", "pack", "platform", "labels",
            ],
        ),
        What::LabelConfigs(ByLabel::List) => show(
            j,
            &json(&api.call::<ListLabelConfigs>(&none).await?),
            &["label", "options", "updated_at"],
        ),
        What::LabelConfigs(ByLabel::Delete { label }) => {
            api.send::<DeleteLabelConfig>(&LabelRef {
                label: label.clone(),
            })
            .await?;
            format!("deleted label config {label}")
        }
        What::LabelQueries(ByLabel::List) => show(
            j,
            &json(&api.call::<ListLabelQueries>(&none).await?),
            &["label", "interval", "platforms", "sql"],
        ),
        What::LabelQueries(ByLabel::Delete { label }) => {
            api.send::<DeleteLabelQuery>(&LabelRef {
                label: label.clone(),
            })
            .await?;
            format!("deleted label query {label}")
        }
        What::Results {
            host,
            query,
            since_minutes,
            newest,
            limit,
            after,
        } => {
            let since = since_minutes.map(minutes_ago);
            let page = api
                .call::<SearchResults>(&ResultSearch {
                    host,
                    name: query,
                    since,
                    until: None,
                    limit: Some(limit),
                    order: newest.then_some(ResultOrder::Newest),
                    after,
                })
                .await?;
            more(page.next.as_deref());
            if j {
                show(true, &json(&page), &[])
            } else {
                let mut rows = json(&page.items);
                for r in rows.as_array_mut().into_iter().flatten() {
                    // The agent's time is in seconds; tables show UTC.
                    r["at"] = json!(r["unix_time"].as_i64().map(|t| t * 1000));
                    r["columns"] = r["line"]
                        .get("columns")
                        .or_else(|| r["line"].get("snapshot"))
                        .map_or(Value::Null, |c| json!(c.to_string()));
                }
                show(
                    false,
                    &rows,
                    &["at", "host_id", "name", "action", "columns"],
                )
            }
        }
        What::Schedules(Schedules::Delete { name }) => {
            api.send::<DeleteSchedule>(&NameRef { name: name.clone() })
                .await?;
            format!("deleted schedule {name}")
        }
        What::Campaigns(Campaigns::List { limit, after }) => {
            let page = created_page(limit, after.as_deref())?;
            let rows = json(&api.call::<ListCampaigns>(&page).await?);
            more_created(&rows, limit, "id");
            show(
                j,
                &rows,
                &[
                    "id",
                    "sql",
                    "target_count",
                    "created_by",
                    "created_at",
                    "expired",
                ],
            )
        }
        What::Campaigns(Campaigns::Get { id }) => {
            let d = json(&api.call::<GetCampaign>(&CampaignRef { id }).await?);
            if j {
                show(true, &d, &[])
            } else {
                let mut out = show(
                    false,
                    &d["coverage"],
                    &[
                        "targeted",
                        "queued",
                        "delivered",
                        "answered",
                        "failed",
                        "expired",
                    ],
                );
                out.push('\n');
                out.push_str(&show(
                    false,
                    &d["hosts"],
                    &["host_id", "hostname", "state", "delivery_count"],
                ));
                out
            }
        }
        What::Carves(Carves::List { limit, after }) => {
            let page = created_page(limit, after.as_deref())?;
            let rows = json(&api.call::<ListCarves>(&page).await?);
            more_created(&rows, limit, "session_id");
            show(
                j,
                &rows,
                &[
                    "session_id",
                    "hostname",
                    "path",
                    "state",
                    "blocks_received",
                    "block_count",
                    "carve_size",
                    "created_at",
                ],
            )
        }
        What::Carves(Carves::Get { id }) => show(
            j,
            &json(&api.call::<GetCarve>(&CarveRef { id }).await?),
            &[],
        ),
        What::Carves(Carves::Download { id, output }) => download_carve(&api, id, output).await?,
        What::Campaigns(Campaigns::Cancel { id }) => show(
            j,
            &json(&api.call::<CancelCampaign>(&CampaignRef { id }).await?),
            &["id", "cancelled_by", "cancelled_at", "target_count"],
        ),
        What::Campaigns(Campaigns::Results { id }) => {
            serde_json::to_string_pretty(&api.call::<CampaignResults>(&CampaignRef { id }).await?)
                .unwrap_or_default()
        }
        What::Query(LiveQuery::Run {
            sql,
            targets,
            wait,
            expires_in,
        }) => query::run_query(&api, j, sql, targets, wait, expires_in).await?,
        What::Users(Users::List) => show(
            j,
            &json(&api.call::<ListUsers>(&none).await?),
            &["name", "role", "disabled", "created_by"],
        ),
        What::Users(Users::Create { name, role: r }) => show(
            j,
            &json(
                &api.call::<CreateUser>(&UserRequest {
                    name,
                    role: role(&r)?,
                })
                .await?,
            ),
            &["name", "role"],
        ),
        What::Users(Users::Update {
            name,
            role: r,
            disabled,
        }) => show(
            j,
            &json(
                &api.call::<UpdateUser>(&UserUpdate {
                    name,
                    role: r.as_deref().map(role).transpose()?,
                    disabled,
                })
                .await?,
            ),
            &["name", "role", "disabled"],
        ),
        What::Users(Users::SetPassword {
            name,
            password_file,
        }) => {
            let password = read_password(password_file.as_deref())?;
            let u = api
                .call::<SetPassword>(&PasswordRequest {
                    name: name.clone(),
                    password,
                })
                .await?;
            if j {
                show(true, &json(&u), &[])
            } else {
                format!("password of {name} set")
            }
        }
        What::Users(Users::Invite { name }) => {
            let inv = api.call::<InviteUser>(&NameRef { name }).await?;
            if j {
                show(true, &json(&inv), &[])
            } else {
                format!(
                    "{}{}\n(one use, for {} hours)",
                    api.url.trim_end_matches('/'),
                    inv.path,
                    ((inv.expires_at - gatehouse_core::time::now_ms()).max(0) + 1_800_000)
                        / 3_600_000
                )
            }
        }
        What::Tokens(Tokens::List) => show(
            j,
            &json(&api.call::<ListTokens>(&none).await?),
            &["id", "user", "description", "expires_at", "revoked"],
        ),
        What::Tokens(Tokens::Create {
            user,
            description,
            expires_in,
        }) => {
            let t = api
                .call::<CreateToken>(&TokenRequest {
                    name: user,
                    description,
                    expires_in,
                })
                .await?;
            if j {
                show(true, &json(&t), &[])
            } else {
                format!(
                    "token {} for {}\nsecret (shown once): {}",
                    t.token.id, t.token.user, t.secret
                )
            }
        }
        What::Tokens(Tokens::Revoke { id }) => show(
            j,
            &json(&api.call::<RevokeToken>(&IdRef { id }).await?),
            &["id", "user", "revoked"],
        ),
        What::EnrollSecrets(EnrollSecrets::List) => show(
            j,
            &json(&api.call::<ListEnrollSecrets>(&none).await?),
            &["id", "labels", "expires_at", "revoked", "created_by"],
        ),
        What::EnrollSecrets(EnrollSecrets::Create {
            id,
            labels,
            expires_in,
        }) => {
            let s = api
                .call::<CreateEnrollSecret>(&EnrollSecretRequest {
                    id,
                    labels,
                    expires_in,
                    secret: None,
                })
                .await?;
            if j {
                show(true, &json(&s), &[])
            } else {
                format!(
                    "enroll secret {} (labels: {})\nvalue (shown once): {}",
                    s.enroll_secret.id,
                    cell(&json(&s.enroll_secret.labels)),
                    s.secret
                )
            }
        }
        What::EnrollSecrets(EnrollSecrets::Revoke { id }) => show(
            j,
            &json(&api.call::<RevokeEnrollSecret>(&SecretRef { id }).await?),
            &["id", "revoked"],
        ),
        What::Rules(Rules::List) => {
            let mut rules = json(&api.call::<ListRules>(&none).await?);
            for r in rules.as_array_mut().into_iter().flatten() {
                let event = r["when"]["event"].clone();
                let actions: Vec<Value> = r["actions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a["type"].clone())
                    .collect();
                r["event"] = event;
                r["action_types"] = json!(actions);
            }
            show(
                j,
                &rules,
                &["name", "enabled", "event", "action_types", "description"],
            )
        }
        What::Destinations(d) => destinations(&api, j, d).await?,
        What::Rules(Rules::Enable { name }) => switch_rule(&api, j, name, true).await?,
        What::Rules(Rules::Disable { name }) => switch_rule(&api, j, name, false).await?,
        What::Rules(Rules::Delete { name }) => {
            api.send::<DeleteRule>(&NameRef { name: name.clone() })
                .await?;
            format!("rule {name} deleted")
        }
        What::Alerts { limit, after } => {
            let (before_at, before_id) = newest_first_cursor(after.as_deref())?;
            let page = AlertPage {
                limit: Some(limit),
                before_at,
                before_id,
            };
            let mut alerts = json(&api.call::<ListAlerts>(&page).await?);
            more_newest_first(&alerts, limit);
            for a in alerts.as_array_mut().into_iter().flatten() {
                let states: Vec<Value> = a["actions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|o| json!(format!("{}:{}", cell(&o["action"]), cell(&o["state"]))))
                    .collect();
                a["delivery"] = json!(states);
            }
            show(
                j,
                &alerts,
                &["at", "rule", "event", "hostname", "summary", "delivery"],
            )
        }
        What::DeadLetters(DeadLetters::List) => show(
            j,
            &json(&api.call::<ListDeadLetters>(&none).await?),
            &["id", "dead_at", "attempts", "last_error"],
        ),
        What::DeadLetters(DeadLetters::Redrive { id }) => show(
            j,
            &json(&api.call::<RedriveDeadLetter>(&DeadLetterRef { id }).await?),
            &["id", "rule", "summary"],
        ),
        What::DeadLetters(DeadLetters::Delete { id }) => {
            api.send::<DeleteDeadLetter>(&DeadLetterRef { id: id.clone() })
                .await?;
            format!("dead letter {id} deleted")
        }
        What::Apply { paths, dry_run } => gitops::apply(&api, &paths, dry_run).await?,
        What::Get { kind, output } => gitops::get_specs(&api, &kind, &output).await?,
        What::Audit {
            limit,
            after,
            actor,
            action,
            target,
            outcome,
            since_minutes,
        } => {
            let (before_at, before_id) = newest_first_cursor(after.as_deref())?;
            let page = AuditFilter {
                limit: Some(limit),
                before_at,
                before_id,
                actor,
                action,
                target,
                outcome,
                since: since_minutes.map(minutes_ago),
                until: None,
            };
            let rows = json(&api.call::<ListAudit>(&page).await?);
            more_newest_first(&rows, limit);
            show(j, &rows, &["at", "actor", "action", "target", "outcome"])
        }
    })
}

/// `m` minutes before now, in Unix milliseconds.
fn minutes_ago(m: u64) -> i64 {
    gatehouse_core::time::now_ms() - i64::try_from(m.saturating_mul(60_000)).unwrap_or(i64::MAX)
}

/// Says on stderr how to get the next page, when there is one (stdout
/// keeps only the page, for pipes).
fn more(next: Option<&str>) {
    if let Some(n) = next
        && let Ok(mut m) = MORE.lock()
    {
        *m = Some(n.to_owned());
    }
}

/// The cursor of the page after the one just listed, said once the list
/// is printed (stderr after stdout, so a terminal shows it below).
static MORE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The `more: --after CURSOR` hint of the last listing, if it was full.
pub fn more_hint() -> Option<String> {
    MORE.lock()
        .ok()
        .and_then(|mut m| m.take())
        .map(|n| format!("more: --after {n}"))
}

/// Newest-first lists (audit, alerts) page by the last item's time and
/// id: `--after AT:ID`, as [`more_newest_first`] prints it.
fn newest_first_cursor(after: Option<&str>) -> Result<(Option<i64>, Option<String>), CtlError> {
    let Some(a) = after else {
        return Ok((None, None));
    };
    let (at, id) = a
        .split_once(':')
        .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id)))
        .ok_or_else(|| {
            CtlError::Refused(format!(
                "--after {a:?}: expected the AT:ID cursor a previous page printed"
            ))
        })?;
    Ok((Some(at), Some(id.to_owned())))
}

/// A page of a list ordered by creation, newest first, after `--after`.
fn created_page(limit: usize, after: Option<&str>) -> Result<ListLimit, CtlError> {
    let (before_at, before_id) = newest_first_cursor(after)?;
    Ok(ListLimit {
        limit: Some(limit),
        before_at,
        before_id,
    })
}

/// A full page may have more after it: its last item is the cursor.
fn more_newest_first(rows: &Value, limit: usize) {
    more_after(rows, limit, "at", "id");
}

/// A full page ordered by creation may have more.
fn more_created(rows: &Value, limit: usize, id_field: &str) {
    more_after(rows, limit, "created_at", id_field);
}

/// Prints the `--after AT:ID` cursor (the last item's `at_field` and
/// `id_field`) when a page is full.
fn more_after(rows: &Value, limit: usize, at_field: &str, id_field: &str) {
    if let Some(items) = rows.as_array()
        && items.len() >= limit
        && let Some(last) = items.last()
        && let (Some(at), Some(id)) = (last[at_field].as_i64(), last[id_field].as_str())
    {
        more(Some(&format!("{at}:{id}")));
    }
}

/// A password from `file` (its first line), else from standard input.
fn read_password(file: Option<&std::path::Path>) -> Result<String, CtlError> {
    let text = match file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| failed(format!("reading {}: {e}", f.display())))?,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| failed(format!("reading the password from standard input: {e}")))?;
            line
        }
    };
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// A destination's definition read from a TOML or JSON file.
fn destination_file(path: &std::path::Path) -> Result<serde_json::Map<String, Value>, CtlError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| failed(format!("reading {}: {e}", path.display())))?;
    let v: Value = if path.extension().is_some_and(|e| e == "toml") {
        let t: toml::Table =
            toml::from_str(&text).map_err(|e| failed(format!("{}: {e}", path.display())))?;
        serde_json::to_value(t).map_err(|e| failed(format!("{}: {e}", path.display())))?
    } else {
        serde_json::from_str(&text).map_err(|e| failed(format!("{}: {e}", path.display())))?
    };
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(failed(format!(
            "{}: one destination (a table / an object)",
            path.display()
        ))),
    }
}

/// `destinations list|pause|resume|replay|put|delete`.
async fn destinations(api: &Api, j: bool, d: Destinations) -> Result<String, CtlError> {
    use gatehouse_api::ops::destinations::{
        DeleteDestination, DestinationDef, ListDestinations, PauseDestination, PutDestination,
        ReplayDestination, ReplayRequest, ResumeDestination,
    };
    const COLUMNS: &[&str] = &[
        "name",
        "kind",
        "source",
        "paused",
        "cursor",
        "lag_lines",
        "lag_seconds",
        "delivered",
        "failed",
        "dropped",
        "missed",
        "last_error",
    ];
    let one = |v: Value| show(j, &json!([v]), COLUMNS);
    Ok(match d {
        Destinations::List => show(
            j,
            &json(&api.call::<ListDestinations>(&NoInput {}).await?),
            COLUMNS,
        ),
        Destinations::Pause { name } => one(json(
            &api.call::<PauseDestination>(&NameRef { name }).await?,
        )),
        Destinations::Resume { name } => one(json(
            &api.call::<ResumeDestination>(&NameRef { name }).await?,
        )),
        Destinations::Replay {
            name,
            oldest,
            since_minutes,
        } => one(json(
            &api.call::<ReplayDestination>(&ReplayRequest {
                name,
                oldest,
                since_ms: since_minutes.map(minutes_ago),
            })
            .await?,
        )),
        Destinations::Put { name, file } => {
            let definition = destination_file(&file)?;
            one(json(
                &api.call::<PutDestination>(&DestinationDef { name, definition })
                    .await?,
            ))
        }
        Destinations::Delete { name } => {
            api.send::<DeleteDestination>(&NameRef { name: name.clone() })
                .await?;
            if j {
                show(true, &json!({"deleted": name}), &[])
            } else {
                format!("destination {name} deleted")
            }
        }
    })
}

/// `rules enable|disable NAME`.
async fn switch_rule(api: &Api, j: bool, name: String, enabled: bool) -> Result<String, CtlError> {
    let r = api
        .call::<SetRuleEnabled>(&RuleSwitch {
            name: name.clone(),
            enabled,
        })
        .await?;
    Ok(if j {
        show(true, &json(&r), &[])
    } else {
        format!(
            "rule {name} {}",
            if enabled { "enabled" } else { "disabled" }
        )
    })
}

/// `carves download ID [-o FILE]`: the archive streamed to a temporary file
/// beside the target, checked against the carve's SHA-256, then renamed.
async fn download_carve(
    api: &Api,
    id: String,
    output: Option<std::path::PathBuf>,
) -> Result<String, CtlError> {
    use std::io::Write;
    let carve = api.call::<GetCarve>(&CarveRef { id: id.clone() }).await?;
    let s = &carve.session;
    if s.state != gatehouse_core::model::CarveState::Complete {
        return Err(failed(format!(
            "carve {id} is not complete ({} of {} blocks received)",
            s.blocks_received, s.block_count
        )));
    }
    let ext = if s.format.as_deref() == Some("zstd") {
        "tar.zst"
    } else {
        "tar"
    };
    let name = if s.carve_id.is_empty() {
        &id
    } else {
        &s.carve_id
    };
    let path = output.unwrap_or_else(|| format!("{name}.{ext}").into());
    let tmp = path.with_extension("part");
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&tmp)
            .map_err(|e| failed(format!("cannot write {}: {e}", tmp.display())))?,
    );
    let got = api
        .download::<DownloadCarve>(&CarveRef { id: id.clone() }, &mut file)
        .await;
    let flushed = file
        .flush()
        .map_err(|e| failed(format!("writing {}: {e}", tmp.display())));
    let (bytes, sha) = match got.and_then(|r| flushed.map(|()| r)) {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if s.sha256.as_deref().is_some_and(|want| want != sha) {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed(format!(
            "carve {id}: the download's SHA-256 {sha} is not the carve's {}",
            s.sha256.as_deref().unwrap_or_default()
        )));
    }
    std::fs::rename(&tmp, &path)
        .map_err(|e| failed(format!("cannot write {}: {e}", path.display())))?;
    Ok(format!(
        "saved {bytes} bytes to {} (sha256 {sha}, {} from {})",
        path.display(),
        carve.path.as_deref().unwrap_or("the carve"),
        if carve.hostname.is_empty() {
            s.host_id.to_string()
        } else {
            carve.hostname.clone()
        }
    ))
}
