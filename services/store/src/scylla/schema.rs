//! Versioned schema migrations for the ScyllaDB keyspace.
//!
//! Every process applies missing migrations at start, one process at a
//! time: they take a conditional lock row (`schema_lock`, expiring after
//! 120 s if its holder dies) and re-read the applied versions once they
//! hold it. Each statement is idempotent (`IF NOT EXISTS`) as well, and a
//! migration's row in `schema_migrations` is written after all its
//! statements, so a crash half-way leaves it to be re-run whole. When
//! nothing is missing (every restart) no lock is taken.
//!
//! The table design, with partition sizes and access paths, is in
//! `docs/architecture/data-model.md`.

use super::config::TtlConfig;

/// One schema version.
#[derive(Debug)]
pub struct Migration {
    pub version: i32,
    pub description: &'static str,
    /// CQL with `{ks}` for the keyspace and `{ttl_logs}`, `{ttl_campaigns}`,
    /// `{ttl_carves}` for the retention classes (seconds).
    pub statements: &'static [&'static str],
}

/// Tables whose default TTL follows each retention class.
pub const LOG_TABLES: &[&str] = &["result_logs", "status_logs"];
pub const LOG_INDEX_TABLES: &[&str] = &["result_log_index", "status_log_index"];
pub const CAMPAIGN_TABLES: &[&str] = &[
    "campaigns",
    "campaigns_by_month",
    "deliveries",
    "campaign_deliveries",
    "open_deliveries",
    "campaign_results",
];
pub const AUDIT_TABLES: &[&str] = &["audit_log", "alerts"];
pub const CARVE_TABLES: &[&str] = &[
    "carves",
    "carves_by_month",
    "carve_block_index",
    "carve_block_done",
    "carve_blocks",
];

/// Log tables are time series with a TTL: time-window compaction drops
/// whole expired SSTables instead of compacting tombstones.
/// LZ4 in 16 KiB chunks: log documents compress 7.2× (4.5× in the default
/// 4 KiB chunks; `services/store/benches/compression_ratio.py`), and logs
/// are read as ranges, so larger chunks cost little.
const TWCS: &str = "compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'DAYS', 'compaction_window_size': 1} AND compression = {'sstable_compression': 'LZ4Compressor', 'chunk_length_in_kb': 16}";

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial schema",
        statements: &[
            "CREATE TABLE IF NOT EXISTS {ks}.hosts (host_id text PRIMARY KEY, doc blob, last_seen bigint)",
            "CREATE TABLE IF NOT EXISTS {ks}.hosts_by_label (label text, bucket int, host_id text, PRIMARY KEY ((label, bucket), host_id))",
            "CREATE TABLE IF NOT EXISTS {ks}.label_sets (scope text, labels text, PRIMARY KEY ((scope), labels))",
            "CREATE TABLE IF NOT EXISTS {ks}.definitions (kind text, name text, doc blob, PRIMARY KEY ((kind), name))",
            "CREATE TABLE IF NOT EXISTS {ks}.meta (key text PRIMARY KEY, value blob)",
            "CREATE TABLE IF NOT EXISTS {ks}.generations (name text PRIMARY KEY, value bigint)",
            "CREATE TABLE IF NOT EXISTS {ks}.config_blobs (hash text PRIMARY KEY, body blob)",
            "CREATE TABLE IF NOT EXISTS {ks}.result_logs (host_id text, day int, name text, unix_time bigint, line_id text, doc blob, PRIMARY KEY ((host_id, day), name, unix_time, line_id)) WITH default_time_to_live = {ttl_logs} AND {twcs}",
            "CREATE TABLE IF NOT EXISTS {ks}.result_log_index (host_id text, day int, name text, skewed boolean, PRIMARY KEY ((host_id), day, name)) WITH default_time_to_live = {ttl_log_index}",
            "CREATE TABLE IF NOT EXISTS {ks}.status_logs (host_id text, day int, unix_time bigint, line_id text, doc blob, PRIMARY KEY ((host_id, day), unix_time, line_id)) WITH default_time_to_live = {ttl_logs} AND {twcs}",
            "CREATE TABLE IF NOT EXISTS {ks}.status_log_index (host_id text, day int, skewed boolean, PRIMARY KEY ((host_id), day)) WITH default_time_to_live = {ttl_log_index}",
            "CREATE TABLE IF NOT EXISTS {ks}.campaigns (campaign_id text PRIMARY KEY, buckets int, doc blob) WITH default_time_to_live = {ttl_campaigns}",
            "CREATE TABLE IF NOT EXISTS {ks}.campaigns_by_month (month int, inverted_time bigint, campaign_id text, PRIMARY KEY ((month), inverted_time, campaign_id)) WITH default_time_to_live = {ttl_campaigns}",
            "CREATE TABLE IF NOT EXISTS {ks}.deliveries (campaign_id text, host_id text, doc blob, PRIMARY KEY ((campaign_id, host_id))) WITH default_time_to_live = {ttl_campaigns}",
            "CREATE TABLE IF NOT EXISTS {ks}.campaign_deliveries (campaign_id text, bucket int, host_id text, doc blob, PRIMARY KEY ((campaign_id, bucket), host_id)) WITH default_time_to_live = {ttl_campaigns}",
            "CREATE TABLE IF NOT EXISTS {ks}.open_deliveries (host_id text, campaign_id text, bucket int, PRIMARY KEY ((host_id), campaign_id)) WITH default_time_to_live = {ttl_campaigns}",
            "CREATE TABLE IF NOT EXISTS {ks}.campaign_results (campaign_id text, bucket int, host_id text, doc blob, PRIMARY KEY ((campaign_id, bucket), host_id)) WITH default_time_to_live = {ttl_campaigns}",
            "CREATE TABLE IF NOT EXISTS {ks}.recent_buckets (kind text, bucket int, PRIMARY KEY ((kind), bucket))",
            "CREATE TABLE IF NOT EXISTS {ks}.enroll_secrets (scope text, id text, doc blob, PRIMARY KEY ((scope), id))",
            "CREATE TABLE IF NOT EXISTS {ks}.enroll_secret_by_hash (sha256 text PRIMARY KEY, doc blob)",
            "CREATE TABLE IF NOT EXISTS {ks}.audit_log (day int, inverted_time bigint, event_id text, doc blob, PRIMARY KEY ((day), inverted_time, event_id)) WITH default_time_to_live = {ttl_audit}",
            "CREATE TABLE IF NOT EXISTS {ks}.carves (session_id text PRIMARY KEY, doc blob) WITH default_time_to_live = {ttl_carves}",
            "CREATE TABLE IF NOT EXISTS {ks}.carves_by_month (month int, inverted_time bigint, session_id text, PRIMARY KEY ((month), inverted_time, session_id)) WITH default_time_to_live = {ttl_carves}",
            "CREATE TABLE IF NOT EXISTS {ks}.carve_block_index (session_id text, block_id bigint, PRIMARY KEY ((session_id), block_id)) WITH default_time_to_live = {ttl_carves}",
            "CREATE TABLE IF NOT EXISTS {ks}.carve_block_done (session_id text, block_id bigint, chunks int, PRIMARY KEY ((session_id, block_id))) WITH default_time_to_live = {ttl_carves}",
            "CREATE TABLE IF NOT EXISTS {ks}.carve_blocks (session_id text, block_id bigint, chunk int, data blob, PRIMARY KEY ((session_id, block_id), chunk)) WITH default_time_to_live = {ttl_carves}",
        ],
    },
    Migration {
        version: 2,
        description: "users and API tokens",
        statements: &[
            // Point reads go to single-row partitions; listings to one small
            // partition per kind (hundreds of rows, not hosts).
            "CREATE TABLE IF NOT EXISTS {ks}.users (name text PRIMARY KEY, doc blob)",
            "CREATE TABLE IF NOT EXISTS {ks}.user_list (scope text, name text, doc blob, PRIMARY KEY ((scope), name))",
            "CREATE TABLE IF NOT EXISTS {ks}.api_tokens (scope text, id text, doc blob, PRIMARY KEY ((scope), id))",
            "CREATE TABLE IF NOT EXISTS {ks}.api_token_by_hash (sha256 text PRIMARY KEY, doc blob)",
        ],
    },
    Migration {
        version: 3,
        description: "alert history and webhook dead letters",
        statements: &[
            // Rules are definitions (kind `rule`). Alerts: one partition per
            // day, newest first, kept as long as the audit log; the rule
            // engine caps alerts per rule per minute, which bounds a day.
            "CREATE TABLE IF NOT EXISTS {ks}.alerts (day int, inverted_time bigint, alert_id text, doc blob, PRIMARY KEY ((day), inverted_time, alert_id)) WITH default_time_to_live = {ttl_audit}",
            // Operators empty it by redriving or deleting: small.
            "CREATE TABLE IF NOT EXISTS {ks}.dead_letters (scope text, id text, doc blob, PRIMARY KEY ((scope), id))",
        ],
    },
    Migration {
        version: 4,
        description: "hosts by name (hostname, host identifier)",
        statements: &[
            // One partition per name: a name belongs to one host, or to a
            // few (clones, reused hostnames), never to the fleet. Hosts
            // stored before this version are indexed once by the first
            // process that finds `meta.hosts_by_name` unset.
            "CREATE TABLE IF NOT EXISTS {ks}.hosts_by_name (name text, host_id text, PRIMARY KEY ((name), host_id))",
        ],
    },
    Migration {
        version: 5,
        description: "people's passwords (console sign-in)",
        statements: &[
            // One small row per user with a password, read at sign-in.
            "CREATE TABLE IF NOT EXISTS {ks}.credentials (name text PRIMARY KEY, doc blob)",
        ],
    },
];

/// Index rows outlive the lines they point to: a line may arrive up to
/// 7 days after its agent day (`logs::CLOCK_TRUST_PAST_SECS`) and 1 day
/// ahead, and each process writes an index row once, so the index TTL is
/// the log TTL plus 8 days.
pub const LOG_INDEX_EXTRA_DAYS: u32 = 8;

/// Seconds for a TTL in days (0: no expiry).
pub fn ttl_secs(days: u32) -> u64 {
    u64::from(days) * 86_400
}

/// The statement text with the keyspace and TTLs filled in.
pub fn render(statement: &str, keyspace: &str, ttl: &TtlConfig) -> String {
    statement
        .replace("{twcs}", TWCS)
        .replace("{ks}", keyspace)
        .replace("{ttl_logs}", &ttl_secs(ttl.logs_days).to_string())
        .replace(
            "{ttl_log_index}",
            &ttl_secs(log_index_days(ttl.logs_days)).to_string(),
        )
        .replace("{ttl_campaigns}", &ttl_secs(ttl.campaigns_days).to_string())
        .replace("{ttl_carves}", &ttl_secs(ttl.carves_days).to_string())
        .replace("{ttl_audit}", &ttl_secs(ttl.audit_days).to_string())
}

fn log_index_days(logs_days: u32) -> u32 {
    if logs_days == 0 {
        0
    } else {
        logs_days + LOG_INDEX_EXTRA_DAYS
    }
}

/// `ALTER TABLE` statements that bring each table's default TTL to `ttl`.
pub fn ttl_alterations(keyspace: &str, ttl: &TtlConfig) -> Vec<String> {
    let mut out = Vec::new();
    for (tables, days) in [
        (LOG_TABLES, ttl.logs_days),
        (LOG_INDEX_TABLES, log_index_days(ttl.logs_days)),
        (CAMPAIGN_TABLES, ttl.campaigns_days),
        (CARVE_TABLES, ttl.carves_days),
        (AUDIT_TABLES, ttl.audit_days),
    ] {
        for t in tables {
            out.push(format!(
                "ALTER TABLE {keyspace}.{t} WITH default_time_to_live = {}",
                ttl_secs(days)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_every_ttl_table_exists() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        let all: Vec<&str> = MIGRATIONS
            .iter()
            .flat_map(|m| m.statements.iter().copied())
            .collect();
        for t in LOG_TABLES
            .iter()
            .chain(LOG_INDEX_TABLES)
            .chain(CAMPAIGN_TABLES)
            .chain(CARVE_TABLES)
            .chain(AUDIT_TABLES)
        {
            let create = format!("{{ks}}.{t} (");
            let stmt = all.iter().find(|s| s.contains(&create));
            assert!(
                stmt.is_some_and(|s| s.contains("default_time_to_live")),
                "{t}"
            );
        }
        assert!(
            all.iter()
                .all(|s| s.starts_with("CREATE TABLE IF NOT EXISTS"))
        );
        assert!(!all.iter().any(|s| s.contains("ALLOW FILTERING")));
    }

    #[test]
    fn render_fills_keyspace_and_ttls() {
        let ttl = TtlConfig {
            logs_days: 7,
            campaigns_days: 1,
            carves_days: 0,
            audit_days: 365,
        };
        let stmt = MIGRATIONS[0]
            .statements
            .iter()
            .find(|s| s.contains("{ks}.result_logs ("))
            .copied()
            .unwrap_or_default();
        let s = render(stmt, "gh", &ttl);
        assert!(s.starts_with("CREATE TABLE IF NOT EXISTS gh.result_logs ("));
        assert!(s.contains("default_time_to_live = 604800 AND compaction = {'class': 'TimeWindowCompactionStrategy'"));
        let alters = ttl_alterations("gh", &ttl);
        assert!(
            alters
                .contains(&"ALTER TABLE gh.carve_blocks WITH default_time_to_live = 0".to_owned())
        );
        assert!(
            alters.contains(
                &"ALTER TABLE gh.deliveries WITH default_time_to_live = 86400".to_owned()
            )
        );
    }
}
