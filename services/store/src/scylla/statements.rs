//! Every CQL statement the adapter sends, prepared once per session, and
//! the builders for the statements whose shape depends on the request
//! (time windows, conditional writes). Unit tests pin the exact text and
//! bound values of the paths a test server cannot execute.

use gatehouse_core::HostId;
use scylla::value::CqlValue;

/// Which consistency setting a statement uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Hosts,
    Logs,
    Reads,
    Admin,
    /// A conditional (Paxos) write: `admin` consistency for the commit,
    /// `serial` for the Paxos round.
    Conditional,
}

macro_rules! statements {
    ($($name:ident = $class:ident, $cql:literal;)*) => {
        /// A prepared statement of the adapter.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum Q { $($name),* }

        impl Q {
            pub const ALL: &'static [Q] = &[$(Q::$name),*];

            /// The statement with `{ks}` for the keyspace.
            pub fn cql(self) -> &'static str {
                match self { $(Q::$name => $cql),* }
            }

            pub fn class(self) -> Class {
                match self { $(Q::$name => Class::$class),* }
            }

            /// The statement's name (a metrics label).
            pub fn name(self) -> &'static str {
                match self { $(Q::$name => stringify!($name)),* }
            }
        }
    };
}

statements! {
    GetHost = Hosts, "SELECT doc, last_seen FROM {ks}.hosts WHERE host_id = ?";
    PutHost = Hosts, "INSERT INTO {ks}.hosts (host_id, doc, last_seen) VALUES (?, ?, ?)";
    DeleteHost = Hosts, "DELETE FROM {ks}.hosts WHERE host_id = ?";
    TouchHost = Hosts, "UPDATE {ks}.hosts SET last_seen = ? WHERE host_id = ?";
    ListHosts = Reads, "SELECT doc, last_seen FROM {ks}.hosts";
    PutLabelMember = Hosts, "INSERT INTO {ks}.hosts_by_label (label, bucket, host_id) VALUES (?, ?, ?)";
    DeleteLabelMember = Hosts, "DELETE FROM {ks}.hosts_by_label WHERE label = ? AND bucket = ? AND host_id = ?";
    LabelMembers = Reads, "SELECT host_id FROM {ks}.hosts_by_label WHERE label = ? AND bucket = ?";
    PutHostName = Hosts, "INSERT INTO {ks}.hosts_by_name (name, host_id) VALUES (?, ?)";
    DeleteHostName = Hosts, "DELETE FROM {ks}.hosts_by_name WHERE name = ? AND host_id = ?";
    HostsNamed = Reads, "SELECT host_id FROM {ks}.hosts_by_name WHERE name = ?";
    PutLabelSet = Hosts, "INSERT INTO {ks}.label_sets (scope, labels) VALUES (?, ?)";
    LabelSets = Reads, "SELECT labels FROM {ks}.label_sets WHERE scope = ?";

    PutDefinition = Admin, "INSERT INTO {ks}.definitions (kind, name, doc) VALUES (?, ?, ?)";
    DeleteDefinition = Conditional, "DELETE FROM {ks}.definitions WHERE kind = ? AND name = ? IF EXISTS";
    ListDefinitions = Admin, "SELECT doc FROM {ks}.definitions WHERE kind = ?";

    GetGeneration = Admin, "SELECT value FROM {ks}.generations WHERE name = ?";
    InitGeneration = Conditional, "INSERT INTO {ks}.generations (name, value) VALUES (?, ?) IF NOT EXISTS";
    CasGeneration = Conditional, "UPDATE {ks}.generations SET value = ? WHERE name = ? IF value = ?";

    PutBlob = Admin, "INSERT INTO {ks}.config_blobs (hash, body) VALUES (?, ?)";
    GetBlob = Admin, "SELECT body FROM {ks}.config_blobs WHERE hash = ?";

    PutResult = Logs, "INSERT INTO {ks}.result_logs (host_id, day, name, unix_time, line_id, doc) VALUES (?, ?, ?, ?, ?, ?)";
    PutResultIndex = Logs, "INSERT INTO {ks}.result_log_index (host_id, day, name) VALUES (?, ?, ?)";
    PutResultIndexSkewed = Logs, "INSERT INTO {ks}.result_log_index (host_id, day, name, skewed) VALUES (?, ?, ?, ?)";
    ResultIndex = Reads, "SELECT day, name, skewed FROM {ks}.result_log_index WHERE host_id = ?";
    ResultsOfHost = Reads, "SELECT doc FROM {ks}.result_logs WHERE host_id = ? AND day = ? AND name = ?";
    ResultsOfHostRange = Reads, "SELECT doc FROM {ks}.result_logs WHERE host_id = ? AND day = ? AND name = ? AND unix_time >= ? AND unix_time < ?";

    PutStatus = Logs, "INSERT INTO {ks}.status_logs (host_id, day, unix_time, line_id, doc) VALUES (?, ?, ?, ?, ?)";
    PutStatusIndex = Logs, "INSERT INTO {ks}.status_log_index (host_id, day) VALUES (?, ?)";
    PutStatusIndexSkewed = Logs, "INSERT INTO {ks}.status_log_index (host_id, day, skewed) VALUES (?, ?, ?)";
    StatusIndex = Reads, "SELECT day, skewed FROM {ks}.status_log_index WHERE host_id = ?";
    StatusOfHost = Reads, "SELECT doc FROM {ks}.status_logs WHERE host_id = ? AND day = ?";
    StatusOfHostRange = Reads, "SELECT doc FROM {ks}.status_logs WHERE host_id = ? AND day = ? AND unix_time >= ? AND unix_time < ?";

    PutCampaign = Admin, "INSERT INTO {ks}.campaigns (campaign_id, buckets, doc) VALUES (?, ?, ?)";
    GetCampaign = Hosts, "SELECT buckets, doc FROM {ks}.campaigns WHERE campaign_id = ?";
    PutCampaignByMonth = Admin, "INSERT INTO {ks}.campaigns_by_month (month, inverted_time, campaign_id) VALUES (?, ?, ?)";
    CampaignsInMonth = Reads, "SELECT inverted_time, campaign_id FROM {ks}.campaigns_by_month WHERE month = ?";
    PutRecentBucket = Admin, "INSERT INTO {ks}.recent_buckets (kind, bucket) VALUES (?, ?)";
    RecentBuckets = Reads, "SELECT bucket FROM {ks}.recent_buckets WHERE kind = ?";

    PutDelivery = Hosts, "INSERT INTO {ks}.deliveries (campaign_id, host_id, doc) VALUES (?, ?, ?)";
    GetDelivery = Hosts, "SELECT doc FROM {ks}.deliveries WHERE campaign_id = ? AND host_id = ?";
    PutCampaignDelivery = Hosts, "INSERT INTO {ks}.campaign_deliveries (campaign_id, bucket, host_id, doc) VALUES (?, ?, ?, ?)";
    DeliveriesInBucket = Reads, "SELECT doc FROM {ks}.campaign_deliveries WHERE campaign_id = ? AND bucket = ?";
    PutOpen = Hosts, "INSERT INTO {ks}.open_deliveries (host_id, campaign_id, bucket) VALUES (?, ?, ?)";
    DeleteOpen = Hosts, "DELETE FROM {ks}.open_deliveries WHERE host_id = ? AND campaign_id = ?";
    OpenOfHost = Hosts, "SELECT campaign_id, bucket FROM {ks}.open_deliveries WHERE host_id = ?";
    PutCampaignResult = Hosts, "INSERT INTO {ks}.campaign_results (campaign_id, bucket, host_id, doc) VALUES (?, ?, ?, ?)";
    ResultsInBucket = Reads, "SELECT doc FROM {ks}.campaign_results WHERE campaign_id = ? AND bucket = ?";
    GetCampaignResult = Reads, "SELECT doc FROM {ks}.campaign_results WHERE campaign_id = ? AND bucket = ? AND host_id = ?";

    CreateCarve = Conditional, "INSERT INTO {ks}.carves (session_id, doc) VALUES (?, ?) IF NOT EXISTS";
    PutCarve = Admin, "INSERT INTO {ks}.carves (session_id, doc) VALUES (?, ?)";
    GetCarve = Admin, "SELECT doc FROM {ks}.carves WHERE session_id = ?";
    PutCarveByMonth = Admin, "INSERT INTO {ks}.carves_by_month (month, inverted_time, session_id) VALUES (?, ?, ?)";
    CarvesInMonth = Reads, "SELECT inverted_time, session_id FROM {ks}.carves_by_month WHERE month = ?";
    GetBlockDone = Admin, "SELECT chunks FROM {ks}.carve_block_done WHERE session_id = ? AND block_id = ?";
    PutBlockDone = Admin, "INSERT INTO {ks}.carve_block_done (session_id, block_id, chunks) VALUES (?, ?, ?)";
    BlockIndex = Admin, "SELECT block_id FROM {ks}.carve_block_index WHERE session_id = ?";
    PutBlockIndex = Admin, "INSERT INTO {ks}.carve_block_index (session_id, block_id) VALUES (?, ?)";
    PutChunk = Admin, "INSERT INTO {ks}.carve_blocks (session_id, block_id, chunk, data) VALUES (?, ?, ?, ?)";
    Chunks = Admin, "SELECT data FROM {ks}.carve_blocks WHERE session_id = ? AND block_id = ?";

    PutSecret = Admin, "INSERT INTO {ks}.enroll_secrets (scope, id, doc) VALUES (?, ?, ?)";
    ListSecrets = Admin, "SELECT doc FROM {ks}.enroll_secrets WHERE scope = ?";
    PutSecretByHash = Admin, "INSERT INTO {ks}.enroll_secret_by_hash (sha256, doc) VALUES (?, ?)";
    SecretByHash = Hosts, "SELECT doc FROM {ks}.enroll_secret_by_hash WHERE sha256 = ?";

    PutUser = Admin, "INSERT INTO {ks}.users (name, doc) VALUES (?, ?)";
    GetUser = Reads, "SELECT doc FROM {ks}.users WHERE name = ?";
    PutUserListed = Admin, "INSERT INTO {ks}.user_list (scope, name, doc) VALUES (?, ?, ?)";
    ListUsers = Admin, "SELECT doc FROM {ks}.user_list WHERE scope = ?";
    PutToken = Admin, "INSERT INTO {ks}.api_tokens (scope, id, doc) VALUES (?, ?, ?)";
    ListTokens = Admin, "SELECT doc FROM {ks}.api_tokens WHERE scope = ?";
    PutTokenByHash = Admin, "INSERT INTO {ks}.api_token_by_hash (sha256, doc) VALUES (?, ?)";
    TokenByHash = Reads, "SELECT doc FROM {ks}.api_token_by_hash WHERE sha256 = ?";
    PutCredential = Admin, "INSERT INTO {ks}.credentials (name, doc) VALUES (?, ?)";
    GetCredential = Reads, "SELECT doc FROM {ks}.credentials WHERE name = ?";

    PutAudit = Admin, "INSERT INTO {ks}.audit_log (day, inverted_time, event_id, doc) VALUES (?, ?, ?, ?)";
    AuditOfDay = Reads, "SELECT doc FROM {ks}.audit_log WHERE day = ?";
    AuditOfDayBefore = Reads, "SELECT doc FROM {ks}.audit_log WHERE day = ? AND (inverted_time, event_id) > (?, ?)";

    PutAlert = Admin, "INSERT INTO {ks}.alerts (day, inverted_time, alert_id, doc) VALUES (?, ?, ?, ?)";
    GetAlert = Reads, "SELECT doc FROM {ks}.alerts WHERE day = ? AND inverted_time = ? AND alert_id = ?";
    AlertsOfDay = Reads, "SELECT doc FROM {ks}.alerts WHERE day = ?";
    AlertsOfDayBefore = Reads, "SELECT doc FROM {ks}.alerts WHERE day = ? AND (inverted_time, alert_id) > (?, ?)";
    PutDeadLetter = Admin, "INSERT INTO {ks}.dead_letters (scope, id, doc) VALUES (?, ?, ?)";
    GetDeadLetter = Admin, "SELECT doc FROM {ks}.dead_letters WHERE scope = ? AND id = ?";
    ListDeadLetters = Admin, "SELECT doc FROM {ks}.dead_letters WHERE scope = ?";
    DeleteDeadLetter = Conditional, "DELETE FROM {ks}.dead_letters WHERE scope = ? AND id = ? IF EXISTS";

    GetMeta = Admin, "SELECT value FROM {ks}.meta WHERE key = ?";
    PutMeta = Admin, "INSERT INTO {ks}.meta (key, value) VALUES (?, ?)";
}

/// Name of the config generation row in `generations`.
pub const CONFIG_GENERATION: &str = "config";

/// An inclusive-exclusive window of agent time (seconds). `None` when the
/// caller asked for all time: the read then has no clustering range.
pub fn window(since: i64, until: i64) -> Option<(i64, i64)> {
    (since > 0 || until < i64::MAX).then_some((since, until))
}

fn text(s: &str) -> CqlValue {
    CqlValue::Text(s.to_owned())
}

/// One partition of `result_logs`: a host's lines of one query on one day.
pub fn results_of_host(
    host: &HostId,
    day: i32,
    name: &str,
    w: Option<(i64, i64)>,
) -> (Q, Vec<CqlValue>) {
    let mut v = vec![text(host.as_str()), CqlValue::Int(day), text(name)];
    match w {
        Some((since, until)) => {
            v.extend([CqlValue::BigInt(since), CqlValue::BigInt(until)]);
            (Q::ResultsOfHostRange, v)
        }
        None => (Q::ResultsOfHost, v),
    }
}

/// One partition of `status_logs`: a host's status lines of one day.
pub fn status_of_host(host: &HostId, day: i32, w: Option<(i64, i64)>) -> (Q, Vec<CqlValue>) {
    let mut v = vec![text(host.as_str()), CqlValue::Int(day)];
    match w {
        Some((since, until)) => {
            v.extend([CqlValue::BigInt(since), CqlValue::BigInt(until)]);
            (Q::StatusOfHostRange, v)
        }
        None => (Q::StatusOfHost, v),
    }
}

/// Builds the read of one day of a newest-first table, after a cursor.
pub type DayStatement = fn(i32, Option<(i64, &str)>) -> (Q, Vec<CqlValue>);

/// One day of the audit log, newest first; with `before`, only events
/// older than that `(at, id)` (a multi-column clustering range).
pub fn audit_of_day(day: i32, before: Option<(i64, &str)>) -> (Q, Vec<CqlValue>) {
    match before {
        Some((at, id)) => (
            Q::AuditOfDayBefore,
            vec![
                CqlValue::Int(day),
                CqlValue::BigInt(i64::MAX - at),
                text(id),
            ],
        ),
        None => (Q::AuditOfDay, vec![CqlValue::Int(day)]),
    }
}

/// One day of alerts, newest first, like [`audit_of_day`].
pub fn alerts_of_day(day: i32, before: Option<(i64, &str)>) -> (Q, Vec<CqlValue>) {
    match audit_of_day(day, before) {
        (Q::AuditOfDayBefore, v) => (Q::AlertsOfDayBefore, v),
        (_, v) => (Q::AlertsOfDay, v),
    }
}

/// The compare-and-set that moves the config generation from `current`.
pub fn bump_generation(current: i64) -> (Q, Vec<CqlValue>) {
    (
        Q::CasGeneration,
        vec![
            CqlValue::BigInt(current + 1),
            text(CONFIG_GENERATION),
            CqlValue::BigInt(current),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_is_keyspace_qualified_and_never_filters() {
        for q in Q::ALL {
            let c = q.cql();
            assert!(c.contains("{ks}."), "{q:?}");
            assert!(!c.contains("ALLOW FILTERING"), "{q:?}");
            assert!(!c.contains("token("), "{q:?}: no token-range scans");
            assert_eq!(Q::ALL[*q as usize], *q);
        }
        // The only statement without a partition key restriction is the
        // operator's paged host listing.
        let unrestricted: Vec<_> = Q::ALL
            .iter()
            .filter(|q| q.cql().starts_with("SELECT") && !q.cql().contains("WHERE"))
            .collect();
        assert_eq!(unrestricted, vec![&Q::ListHosts]);
    }

    #[test]
    fn bounded_windows_read_a_clustering_range() {
        let h = HostId::from_identity("hw:x");
        let (q, v) = results_of_host(&h, 19_878, "users", window(1_717_496_431, 1_717_500_000));
        assert_eq!(
            q.cql(),
            "SELECT doc FROM {ks}.result_logs WHERE host_id = ? AND day = ? AND name = ? AND unix_time >= ? AND unix_time < ?"
        );
        assert_eq!(
            v,
            vec![
                CqlValue::Text(h.as_str().to_owned()),
                CqlValue::Int(19_878),
                CqlValue::Text("users".into()),
                CqlValue::BigInt(1_717_496_431),
                CqlValue::BigInt(1_717_500_000),
            ]
        );
        let (q, v) = status_of_host(&h, 3, window(5, i64::MAX));
        assert_eq!(q, Q::StatusOfHostRange);
        assert_eq!(v[2..], [CqlValue::BigInt(5), CqlValue::BigInt(i64::MAX)]);
    }

    #[test]
    fn unbounded_windows_read_whole_partitions() {
        let h = HostId::from_identity("hw:x");
        assert_eq!(window(0, i64::MAX), None);
        let (q, v) = results_of_host(&h, 1, "users", None);
        assert_eq!(q, Q::ResultsOfHost);
        assert_eq!(v.len(), 3);
        assert_eq!(status_of_host(&h, 1, None).0, Q::StatusOfHost);
    }

    #[test]
    fn audit_pages_continue_after_the_last_event() {
        let (q, v) = audit_of_day(20_000, Some((1_728_000_000_123, "ev-9")));
        assert_eq!(
            q.cql(),
            "SELECT doc FROM {ks}.audit_log WHERE day = ? AND (inverted_time, event_id) > (?, ?)"
        );
        assert_eq!(
            v,
            vec![
                CqlValue::Int(20_000),
                CqlValue::BigInt(i64::MAX - 1_728_000_000_123),
                CqlValue::Text("ev-9".into()),
            ]
        );
        assert_eq!(audit_of_day(20_000, None).0, Q::AuditOfDay);
    }

    #[test]
    fn generation_bump_is_a_compare_and_set() {
        let (q, v) = bump_generation(41);
        assert_eq!(
            q.cql(),
            "UPDATE {ks}.generations SET value = ? WHERE name = ? IF value = ?"
        );
        assert_eq!(q.class(), Class::Conditional);
        assert_eq!(
            v,
            vec![
                CqlValue::BigInt(42),
                CqlValue::Text("config".into()),
                CqlValue::BigInt(41)
            ]
        );
        assert_eq!(Q::CreateCarve.class(), Class::Conditional);
        assert!(Q::CreateCarve.cql().ends_with("IF NOT EXISTS"));
    }
}
