//! Agent config assembly.
//!
//! A host's config is a pure function of its label set and the operator's
//! definitions (queries, schedules, per-label options/decorators/file paths).
//! The result is serialized once (keys sorted, so equal configs are equal
//! bytes) and addressed by its SHA-256, so every host with the same labels
//! shares one blob. Configs over the released agents' 1 MiB limit are
//! refused rather than published.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::ids::sha256_hex;
use crate::model::{LabelConfig, Query, Schedule};

/// Released agents (≤ 5.23.1) reject configs larger than this.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// Flags the agent only accepts on its command line; in config `options`
/// they are ignored with a warning, so we refuse them up front.
pub const CLI_ONLY_FLAGS: &[&str] = &[
    "config_plugin",
    "config_refresh",
    "config_tls_refresh",
    "config_accelerated_refresh",
    "config_tls_accelerated_refresh",
    "config_tls_endpoint",
    "config_tls_max_attempts",
    "config_enable_backup",
    "logger_plugin",
    "disable_carver",
    "carver_disable_function",
    "carver_block_size",
    "carver_compression",
    "carver_expiry",
    "carver_start_endpoint",
    "carver_continue_endpoint",
    "tls_hostname",
    "tls_server_certs",
    "tls_client_cert",
    "tls_client_key",
    "tls_session_reuse",
    "tls_session_timeout",
    "tls_accept_gzip",
    "enroll_tls_endpoint",
    "enroll_secret_path",
    "enroll_secret_env",
    "enroll_always",
    "disable_enrollment",
    "disable_reenrollment",
    "tls_enroll_max_attempts",
    "tls_enroll_max_interval",
    "proxy_hostname",
];

const PLATFORMS: &[&str] = &[
    "any", "all", "posix", "linux", "darwin", "windows", "freebsd",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    /// One field of a definition is wrong: `field` names it as the API's
    /// JSON names it (`interval`, `labels`), so a form can show the
    /// message next to it.
    #[error("{message}")]
    Field {
        field: &'static str,
        message: String,
    },
    #[error(
        "config for labels {labels:?} would be {size} bytes, over the {limit}-byte limit of released osquery agents"
    )]
    TooLarge {
        labels: Vec<String>,
        size: usize,
        limit: usize,
    },
}

impl ConfigError {
    /// A message about one field.
    pub fn field(field: &'static str, message: impl Into<String>) -> Self {
        ConfigError::Field {
            field,
            message: message.into(),
        }
    }

    /// The same error, about `field` (a name's check reused for a list).
    #[must_use]
    pub fn in_field(self, field: &'static str) -> Self {
        match self {
            ConfigError::Invalid(message) | ConfigError::Field { message, .. } => {
                ConfigError::Field { field, message }
            }
            other => other,
        }
    }
}

/// Everything that shapes configs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Definitions {
    pub queries: BTreeMap<String, Query>,
    pub schedules: BTreeMap<String, Schedule>,
    pub label_configs: BTreeMap<String, LabelConfig>,
    /// Dynamic labels (served to hosts as live queries, not in configs).
    pub label_queries: BTreeMap<String, crate::model::LabelQuery>,
}

/// A serialized config and its content address.
#[derive(Debug, Clone, PartialEq)]
pub struct Assembled {
    pub hash: String,
    pub bytes: bytes::Bytes,
}

pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b))
}

pub fn validate_query(q: &Query) -> Result<(), ConfigError> {
    if !valid_name(&q.name) {
        return Err(ConfigError::field(
            "name",
            format!(
                "query name {:?} must be 1-128 characters of letters, digits, '_', '-', '.', ':' or '/'",
                q.name
            ),
        ));
    }
    if q.sql.trim().is_empty() {
        return Err(ConfigError::field("sql", "query sql must not be empty"));
    }
    Ok(())
}

pub fn validate_schedule(s: &Schedule, defs: &Definitions) -> Result<(), ConfigError> {
    if !valid_name(&s.name) {
        return Err(ConfigError::field(
            "name",
            format!("schedule name {:?} is not a valid name", s.name),
        ));
    }
    if !defs.queries.contains_key(&s.query) {
        return Err(ConfigError::field(
            "query",
            format!("schedule {:?} names unknown query {:?}", s.name, s.query),
        ));
    }
    if !(1..=604_800).contains(&s.interval) {
        return Err(ConfigError::field(
            "interval",
            format!(
                "interval {} is outside 1..=604800 seconds (the agent drops such queries)",
                s.interval
            ),
        ));
    }
    if let Some(shard) = s.shard
        && !(1..=100).contains(&shard)
    {
        return Err(ConfigError::field(
            "shard",
            format!("shard {shard} is outside 1..=100"),
        ));
    }
    if let Some(p) = &s.platform {
        for part in p.split(',') {
            if !PLATFORMS.contains(&part.trim()) {
                return Err(ConfigError::field(
                    "platform",
                    format!("platform {part:?} is not one of {}", PLATFORMS.join(", ")),
                ));
            }
        }
    }
    if let Some(pack) = &s.pack
        && !valid_name(pack)
    {
        return Err(ConfigError::field(
            "pack",
            format!("pack name {pack:?} is not a valid name"),
        ));
    }
    if s.labels.is_empty() {
        return Err(ConfigError::field(
            "labels",
            "a schedule needs at least one label (use \"all\" for every host)",
        ));
    }
    for l in &s.labels {
        validate_label(l).map_err(|e| e.in_field("labels"))?;
    }
    Ok(())
}

pub fn validate_label(l: &str) -> Result<(), ConfigError> {
    if valid_name(l) {
        Ok(())
    } else {
        Err(ConfigError::field(
            "label",
            format!("label {l:?} is not a valid name"),
        ))
    }
}

pub fn validate_label_query(q: &crate::model::LabelQuery) -> Result<(), ConfigError> {
    validate_label(&q.label)?;
    if q.label == "all" || q.label.starts_with("platform:") {
        return Err(ConfigError::field(
            "label",
            format!(
                "label {:?} is built in; a label query needs its own label",
                q.label
            ),
        ));
    }
    if q.sql.trim().is_empty() {
        return Err(ConfigError::field(
            "sql",
            "label query sql must not be empty",
        ));
    }
    if q.interval < 60 {
        return Err(ConfigError::field(
            "interval",
            "label query interval must be at least 60 seconds",
        ));
    }
    if let Some(p) = q
        .platforms
        .iter()
        .find(|p| !["darwin", "linux", "windows", "freebsd"].contains(&p.as_str()))
    {
        return Err(ConfigError::field(
            "platforms",
            format!("platform {p:?} is not one of darwin, linux, windows, freebsd"),
        ));
    }
    Ok(())
}

/// The type of a runtime flag the agent accepts in `options`, as osquery
/// declares it (`FLAG(bool, ...)`, `FLAG(uint64, ...)`, `FLAG(string, ...)`).
#[derive(Debug, Clone, Copy)]
enum OptionType {
    Bool,
    Unsigned,
    Text,
    OneOf(&'static [&'static str]),
}

/// Config-settable flags of the agent's remote API and logging
/// (osquery-protocol.md §10), with their types. Other names pass through:
/// `custom_*` and flags of other subsystems are the operator's business,
/// and the agent itself warns about unknown ones.
const OPTION_TYPES: &[(&str, OptionType)] = &[
    ("logger_tls_period", OptionType::Unsigned),
    ("logger_tls_max_lines", OptionType::Unsigned),
    ("logger_tls_max_linesize", OptionType::Unsigned),
    ("logger_tls_max", OptionType::Unsigned),
    ("logger_tls_backoff_max", OptionType::Unsigned),
    ("logger_tls_compress", OptionType::Bool),
    ("logger_tls_endpoint", OptionType::Text),
    ("tls_disable_status_log", OptionType::Bool),
    ("buffered_log_max", OptionType::Unsigned),
    ("logger_event_type", OptionType::Bool),
    ("logger_snapshot_event_type", OptionType::Bool),
    ("logger_numerics", OptionType::Bool),
    ("log_numerics_as_numbers", OptionType::Bool),
    ("logger_min_status", OptionType::Unsigned),
    ("decorations_top_level", OptionType::Bool),
    ("disable_distributed", OptionType::Bool),
    ("distributed_plugin", OptionType::Text),
    ("distributed_interval", OptionType::Unsigned),
    ("distributed_tls_max_attempts", OptionType::Unsigned),
    ("distributed_denylist_duration", OptionType::Unsigned),
    ("distributed_tls_read_endpoint", OptionType::Text),
    ("distributed_tls_write_endpoint", OptionType::Text),
    ("read_max", OptionType::Unsigned),
    (
        "host_identifier",
        OptionType::OneOf(&["hostname", "uuid", "instance", "ephemeral", "specified"]),
    ),
    ("schedule_splay_percent", OptionType::Unsigned),
    ("schedule_default_interval", OptionType::Unsigned),
    ("schedule_epoch", OptionType::Unsigned),
];

/// Whether `v` is a value the agent can turn into a flag of type `t`
/// (a string is parsed by the flag, as gflags parses command lines).
fn option_fits(t: OptionType, v: &Value) -> bool {
    match (t, v) {
        (OptionType::Bool, Value::Bool(_)) => true,
        (OptionType::Bool, Value::String(s)) => matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "1" | "0" | "yes" | "no" | "t" | "f" | "y" | "n"
        ),
        (OptionType::Unsigned, Value::Number(n)) => n.is_u64(),
        (OptionType::Unsigned, Value::String(s)) => s.parse::<u64>().is_ok(),
        (OptionType::Text, Value::String(_) | Value::Number(_) | Value::Bool(_)) => true,
        (OptionType::OneOf(allowed), Value::String(s)) => allowed.contains(&s.as_str()),
        _ => false,
    }
}

fn option_expects(t: OptionType) -> String {
    match t {
        OptionType::Bool => "true or false".into(),
        OptionType::Unsigned => "a whole number of 0 or more".into(),
        OptionType::Text => "a string".into(),
        OptionType::OneOf(allowed) => format!("one of {}", allowed.join(", ")),
    }
}

pub fn validate_label_config(c: &LabelConfig) -> Result<(), ConfigError> {
    validate_label(&c.label)?;
    for (k, v) in &c.options {
        if CLI_ONLY_FLAGS.contains(&k.as_str()) {
            return Err(ConfigError::field(
                "options",
                format!(
                    "option {k:?} can only be set on the agent's command line; the agent ignores it in config"
                ),
            ));
        }
        if v.is_object() || v.is_array() {
            return Err(ConfigError::field(
                "options",
                format!("option {k:?} must be a string, number or boolean"),
            ));
        }
        if let Some((_, t)) = OPTION_TYPES.iter().find(|(name, _)| name == k)
            && !option_fits(*t, v)
        {
            return Err(ConfigError::field(
                "options",
                format!(
                    "option {k:?} must be {} (osquery's flag type), not {v}",
                    option_expects(*t)
                ),
            ));
        }
    }
    for secs in c.decorators.interval.keys() {
        if secs
            .parse::<u32>()
            .map(|s| s == 0 || s % 60 != 0)
            .unwrap_or(true)
        {
            return Err(ConfigError::field(
                "decorators",
                format!("decorator interval {secs:?} must be a positive multiple of 60 seconds"),
            ));
        }
    }
    Ok(())
}

/// Assembles the config for a host carrying `labels` (from `Host::label_set`).
pub fn assemble(labels: &[String], defs: &Definitions) -> Result<Assembled, ConfigError> {
    let has = |ls: &[String]| ls.iter().any(|l| labels.contains(l));
    let mut schedule = Map::new();
    let mut packs: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for s in defs.schedules.values().filter(|s| has(&s.labels)) {
        let Some(q) = defs.queries.get(&s.query) else {
            continue;
        };
        let mut entry = Map::new();
        entry.insert("query".into(), Value::from(q.sql.clone()));
        entry.insert("interval".into(), Value::from(s.interval));
        if s.snapshot {
            entry.insert("snapshot".into(), Value::from(true));
        }
        if !s.removed {
            entry.insert("removed".into(), Value::from(false));
        }
        if let Some(p) = &s.platform {
            entry.insert("platform".into(), Value::from(p.clone()));
        }
        if let Some(v) = &s.version {
            entry.insert("version".into(), Value::from(v.clone()));
        }
        if let Some(sh) = s.shard {
            entry.insert("shard".into(), Value::from(sh));
        }
        match &s.pack {
            None => {
                schedule.insert(s.name.clone(), Value::Object(entry));
            }
            Some(p) => {
                packs
                    .entry(p.clone())
                    .or_default()
                    .insert(s.name.clone(), Value::Object(entry));
            }
        }
    }
    let mut options = Map::new();
    let mut load = Vec::<String>::new();
    let mut always = Vec::<String>::new();
    let mut interval: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut file_paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Labels are applied in label-set order: `all`, platform, then the
    // operator's labels sorted; later ones override earlier options.
    for label in labels {
        let Some(c) = defs.label_configs.get(label) else {
            continue;
        };
        for (k, v) in &c.options {
            options.insert(k.clone(), v.clone());
        }
        push_unique(&mut load, &c.decorators.load);
        push_unique(&mut always, &c.decorators.always);
        for (secs, qs) in &c.decorators.interval {
            push_unique(interval.entry(secs.clone()).or_default(), qs);
        }
        for (cat, paths) in &c.file_paths {
            push_unique(file_paths.entry(cat.clone()).or_default(), paths);
        }
    }
    let mut root = Map::new();
    root.insert("options".into(), Value::Object(options));
    root.insert("schedule".into(), Value::Object(schedule));
    if !packs.is_empty() {
        let packs: Map<String, Value> = packs
            .into_iter()
            .map(|(name, queries)| (name, json!({ "queries": queries })))
            .collect();
        root.insert("packs".into(), Value::Object(packs));
    }
    if !(load.is_empty() && always.is_empty() && interval.is_empty()) {
        let mut d = Map::new();
        if !load.is_empty() {
            d.insert("load".into(), json!(load));
        }
        if !always.is_empty() {
            d.insert("always".into(), json!(always));
        }
        if !interval.is_empty() {
            d.insert("interval".into(), json!(interval));
        }
        root.insert("decorators".into(), Value::Object(d));
    }
    if !file_paths.is_empty() {
        root.insert("file_paths".into(), json!(file_paths));
    }
    let bytes = serde_json::to_vec(&Value::Object(root))
        .map_err(|e| ConfigError::Invalid(format!("config does not serialize: {e}")))?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            labels: labels.to_vec(),
            size: bytes.len(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    Ok(Assembled {
        hash: sha256_hex(&bytes),
        bytes: bytes.into(),
    })
}

/// Loads every definition that shapes configs.
pub async fn load_definitions(
    store: &dyn crate::ports::Store,
) -> Result<Definitions, crate::ports::StoreError> {
    Ok(Definitions {
        queries: store
            .list_queries()
            .await?
            .into_iter()
            .map(|q| (q.name.clone(), q))
            .collect(),
        schedules: store
            .list_schedules()
            .await?
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect(),
        label_configs: store
            .list_label_configs()
            .await?
            .into_iter()
            .map(|c| (c.label.clone(), c))
            .collect(),
        label_queries: store
            .list_label_queries()
            .await?
            .into_iter()
            .map(|q| (q.label.clone(), q))
            .collect(),
    })
}

fn push_unique(into: &mut Vec<String>, from: &[String]) {
    for s in from {
        if !into.contains(s) {
            into.push(s.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_config_options_are_checked_against_osquerys_flag_types() {
        let with = |k: &str, v: serde_json::Value| {
            let mut c = LabelConfig {
                label: "servers".into(),
                options: Map::new(),
                decorators: Default::default(),
                file_paths: Default::default(),
                updated_at: 0,
            };
            c.options.insert(k.into(), v);
            validate_label_config(&c)
        };
        for (k, v) in [
            ("logger_tls_period", serde_json::json!(10)),
            ("logger_tls_period", serde_json::json!("10")),
            ("logger_tls_compress", serde_json::json!(true)),
            ("logger_tls_compress", serde_json::json!("false")),
            ("host_identifier", serde_json::json!("uuid")),
            ("custom_team", serde_json::json!("{\"a\": 1}")),
            ("watchdog_memory_limit", serde_json::json!(500)),
        ] {
            assert!(with(k, v.clone()).is_ok(), "{k} = {v}");
        }
        for (k, v, says) in [
            (
                "logger_tls_period",
                serde_json::json!("ten"),
                "whole number",
            ),
            (
                "distributed_interval",
                serde_json::json!(-5),
                "whole number",
            ),
            (
                "distributed_interval",
                serde_json::json!(1.5),
                "whole number",
            ),
            (
                "logger_numerics",
                serde_json::json!("maybe"),
                "true or false",
            ),
            (
                "host_identifier",
                serde_json::json!("mac"),
                "one of hostname",
            ),
        ] {
            let e = with(k, v.clone())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(k) && e.contains(says), "{k} = {v}: {e}");
        }
    }

    use super::*;

    fn defs() -> Definitions {
        let mut d = Definitions::default();
        for (n, sql) in [
            ("users", "SELECT * FROM users"),
            ("procs", "SELECT * FROM processes"),
        ] {
            d.queries.insert(
                n.into(),
                Query {
                    name: n.into(),
                    sql: sql.into(),
                    description: String::new(),
                    updated_at: 0,
                },
            );
        }
        let sched = |name: &str, q: &str, labels: &[&str], pack: Option<&str>| Schedule {
            name: name.into(),
            query: q.into(),
            interval: 60,
            snapshot: false,
            removed: true,
            platform: None,
            version: None,
            shard: None,
            pack: pack.map(Into::into),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            updated_at: 0,
        };
        d.schedules
            .insert("users".into(), sched("users", "users", &["all"], None));
        d.schedules.insert(
            "procs".into(),
            sched("procs", "procs", &["servers"], Some("inventory")),
        );
        let mut all = LabelConfig {
            label: "all".into(),
            ..Default::default()
        };
        all.options
            .insert("logger_tls_period".into(), Value::from(4));
        all.decorators
            .load
            .push("SELECT uuid AS host_uuid FROM system_info".into());
        let mut servers = LabelConfig {
            label: "servers".into(),
            ..Default::default()
        };
        servers
            .options
            .insert("logger_tls_period".into(), Value::from(10));
        servers
            .file_paths
            .insert("etc".into(), vec!["/etc/%%".into()]);
        d.label_configs.insert("all".into(), all);
        d.label_configs.insert("servers".into(), servers);
        d
    }

    #[test]
    fn assembles_by_label_and_is_deterministic() {
        let d = defs();
        let plain = assemble(&["all".into(), "platform:linux".into()], &d).unwrap();
        let v: Value = serde_json::from_slice(&plain.bytes).unwrap_or_default();
        assert!(v["schedule"]["users"].is_object());
        assert!(v.get("packs").is_none());
        assert_eq!(v["options"]["logger_tls_period"], 4);
        let srv = assemble(
            &["all".into(), "platform:linux".into(), "servers".into()],
            &d,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&srv.bytes).unwrap_or_default();
        assert_eq!(
            v["packs"]["inventory"]["queries"]["procs"]["query"],
            "SELECT * FROM processes"
        );
        assert_eq!(v["options"]["logger_tls_period"], 10);
        assert_eq!(v["file_paths"]["etc"][0], "/etc/%%");
        assert_ne!(plain.hash, srv.hash);
        let again = assemble(&["all".into(), "platform:linux".into()], &d).unwrap();
        assert_eq!(plain, again);
    }

    #[test]
    fn refuses_oversized_configs() {
        let mut d = defs();
        if let Some(q) = d.queries.get_mut("users") {
            q.sql = "x".repeat(MAX_CONFIG_BYTES);
        }
        assert!(matches!(
            assemble(&["all".into()], &d),
            Err(ConfigError::TooLarge { .. })
        ));
    }

    #[test]
    fn validation() {
        let d = defs();
        let mut s = d.schedules["users"].clone();
        s.interval = 0;
        assert!(validate_schedule(&s, &d).is_err());
        s.interval = 10;
        s.query = "nope".into();
        assert!(validate_schedule(&s, &d).is_err());
        let mut c = LabelConfig {
            label: "x".into(),
            ..Default::default()
        };
        c.options.insert("config_refresh".into(), Value::from(10));
        assert!(validate_label_config(&c).is_err());
    }
}
