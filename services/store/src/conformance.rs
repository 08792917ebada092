//! The store conformance suite. Every `Store` adapter runs each check as
//! its own test against a fresh, empty store ([`conformance_tests!`](crate::conformance_tests)):
//! the embedded store in its unit tests, the ScyllaDB adapter against a
//! real CQL server.
//!
//! Test code compiled into the library (feature `conformance`) so other
//! crates' tests can run it: a failed unwrap is a failed check here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gatehouse_core::HostId;
use gatehouse_core::logs::records;
use gatehouse_core::model::*;
use gatehouse_core::ports::{Fence, Store, StoreError};
use gatehouse_core::wire::{parse_log, parse_object};
use serde_json::{Map, Value, json};

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    // Display, not Debug: the error says what failed in words.
    match r {
        Ok(v) => v,
        Err(e) => panic!("call failed: {e}"),
    }
}

/// What the server under the adapter can execute. An adapter always sends
/// the statements its real backend needs; checks that depend on a
/// semantic the server lacks are skipped and listed in the [`Report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Semantics {
    /// Clustering-range predicates (`unix_time >= ? AND unix_time < ?`).
    pub clustering_ranges: bool,
    /// Conditional writes (`IF NOT EXISTS`, `IF value = ?`).
    pub conditional_writes: bool,
    /// `purge_logs_before_day` deletes (false: the store expires by TTL).
    pub explicit_purge: bool,
    /// Result searches by query name across hosts (false: the store keeps
    /// results per host only and answers `StoreError::Invalid`).
    pub fleet_wide_results: bool,
    /// How the store keeps a deposed writer's fenced write from
    /// superseding its successor's.
    pub fencing: Fencing,
}

/// How a store enforces [`Fence`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fencing {
    /// The stale write fails with [`StoreError::Fenced`] (embedded store).
    Rejects,
    /// The stale write is accepted but never visible over the newer one
    /// (ScyllaDB: write timestamps derived from the token).
    Supersedes,
    /// The server ignores client write timestamps (the test CQL server):
    /// the check is not run.
    NotChecked,
}

impl Semantics {
    /// A store with every semantic the port describes.
    pub const FULL: Self = Self {
        clustering_ranges: true,
        conditional_writes: true,
        explicit_purge: true,
        fleet_wide_results: true,
        fencing: Fencing::Rejects,
    };
}

/// Checks that were skipped, each with the semantic it needs.
#[derive(Debug, Default)]
pub struct Report {
    pub not_run: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.not_run.is_empty() {
            return f.write_str("every conformance check ran");
        }
        writeln!(f, "conformance checks NOT RUN on this server:")?;
        for n in &self.not_run {
            writeln!(f, "  - {n}")?;
        }
        Ok(())
    }
}

/// Each check on its own, with one signature, so an adapter's tests run
/// one test per check against a fresh store ([`crate::conformance_tests`]):
/// the first failure no longer hides the rest.
pub mod checks {
    use super::{Report, Semantics, Store};

    pub async fn hosts(store: &dyn Store, _: Semantics) -> Report {
        super::hosts(store).await;
        Report::default()
    }

    pub async fn definitions(store: &dyn Store, sem: Semantics) -> Report {
        let mut r = Report::default();
        super::definitions(store, sem, &mut r).await;
        r
    }

    pub async fn config_blobs_and_generation(store: &dyn Store, sem: Semantics) -> Report {
        let mut r = Report::default();
        super::config_blobs_and_generation(store, sem, &mut r).await;
        r
    }

    pub async fn logs(store: &dyn Store, sem: Semantics) -> Report {
        let mut r = Report::default();
        super::logs(store, sem, &mut r).await;
        r
    }

    pub async fn campaigns(store: &dyn Store, _: Semantics) -> Report {
        super::campaigns(store).await;
        Report::default()
    }

    pub async fn fencing(store: &dyn Store, sem: Semantics) -> Report {
        let mut r = Report::default();
        super::fencing(store, sem, &mut r).await;
        r
    }

    pub async fn carves(store: &dyn Store, sem: Semantics) -> Report {
        let mut r = Report::default();
        super::carves(store, sem, &mut r).await;
        r
    }

    pub async fn enroll_secrets(store: &dyn Store, _: Semantics) -> Report {
        super::enroll_secrets(store).await;
        Report::default()
    }

    pub async fn users_and_tokens(store: &dyn Store, _: Semantics) -> Report {
        super::users_and_tokens(store).await;
        Report::default()
    }

    pub async fn audit(store: &dyn Store, sem: Semantics) -> Report {
        let mut r = Report::default();
        super::audit(store, sem, &mut r).await;
        r
    }

    pub async fn rules_and_alerts(store: &dyn Store, sem: Semantics) -> Report {
        let mut r = Report::default();
        super::rules_and_alerts(store, sem, &mut r).await;
        r
    }

    pub async fn meta(store: &dyn Store, _: Semantics) -> Report {
        super::meta(store).await;
        Report::default()
    }
}

/// One `#[tokio::test]` per conformance check, named after it, each
/// against a fresh store from `$fresh` (an async fn returning a guard,
/// which keeps what the store needs alive, and the store). Checks the
/// server cannot run (`$sem`) pass and print what was not run; with
/// `Semantics::FULL` nothing may be skipped.
#[macro_export]
macro_rules! conformance_tests {
    ($fresh:path, $sem:expr) => {
        $crate::conformance_tests!(@each $fresh, $sem;
            hosts definitions config_blobs_and_generation logs campaigns fencing carves
            enroll_secrets users_and_tokens audit rules_and_alerts meta);
    };
    (@each $fresh:path, $sem:expr; $($check:ident)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (_guard, store) = $fresh().await;
                let report = $crate::conformance::checks::$check(&*store, $sem).await;
                println!("{}: {report}", stringify!($check));
                if $sem == $crate::conformance::Semantics::FULL {
                    assert!(report.not_run.is_empty(), "a full store skipped: {report}");
                }
            }
        )*
    };
}

/// Runs every check in order against one empty store (for a summary of
/// what a server cannot run; adapters' tests run each check on its own).
pub async fn run_all(store: &dyn Store, sem: Semantics) -> Report {
    let mut report = Report::default();
    hosts(store).await;
    definitions(store, sem, &mut report).await;
    config_blobs_and_generation(store, sem, &mut report).await;
    logs(store, sem, &mut report).await;
    campaigns(store).await;
    fencing(store, sem, &mut report).await;
    carves(store, sem, &mut report).await;
    enroll_secrets(store).await;
    users_and_tokens(store).await;
    audit(store, sem, &mut report).await;
    rules_and_alerts(store, sem, &mut report).await;
    meta(store).await;
    report
}

fn filter(
    host: Option<&HostId>,
    name: Option<&str>,
    since: i64,
    until: i64,
    limit: usize,
) -> ResultFilter {
    ResultFilter {
        host_id: host.cloned(),
        name: name.map(str::to_owned),
        since,
        until,
        limit,
        ..ResultFilter::default()
    }
}

/// Walks every page of `f` (pages of `f.limit` lines) by cursor.
async fn all_pages(store: &dyn Store, mut f: ResultFilter) -> Vec<ResultLog> {
    let mut out = Vec::new();
    loop {
        let page = ok(store.query_results(&f).await);
        let Some(last) = page.last() else {
            return out;
        };
        f.after = Some(gatehouse_core::model::ResultCursor::of(last));
        out.extend(page);
        assert!(out.len() <= 1000, "paging does not end");
    }
}

/// One agent log POST of `lines` typical result lines (a `processes` event
/// line with decorations) for `host`, as the edge hands it to the store.
pub fn processes_post(host: &HostId, round: u64, lines: usize, now_ms: i64) -> LogRecords {
    let data: Vec<_> = (0..lines)
        .map(|i| {
            json!({"name": "pack_inventory_processes", "hostIdentifier": "web-01", "calendarTime": "Tue Jun  4 10:20:31 2024 UTC",
                   "unixTime": now_ms / 1000, "epoch": 0, "counter": round, "numerics": false,
                   "decorations": {"host_uuid": host.as_str(), "hostname": "web-01.example.com"},
                   "columns": {"pid": format!("{}", round * 1000 + i as u64), "name": "sshd", "path": "/usr/sbin/sshd",
                               "cmdline": "/usr/sbin/sshd -D", "uid": "0", "resident_size": "8192000"},
                   "action": "added"})
        })
        .collect();
    let body = ok(serde_json::to_vec(
        &json!({"log_type": "result", "data": data}),
    ));
    records(host, ok(parse_log(ok(parse_object(&body)))), now_ms)
}

pub fn sample_host(n: u32) -> Host {
    let id = HostId::from_identity(&format!("hw:conformance-{n}"));
    Host {
        id,
        identity: format!("hw:conformance-{n}"),
        host_identifier: format!("host-{n}"),
        hostname: format!("host-{n}.example.com"),
        platform: "linux".into(),
        platform_type: "9".into(),
        os_name: "Ubuntu".into(),
        os_version: "22.04".into(),
        osquery_version: "5.23.1".into(),
        details: Default::default(),
        labels: vec![],
        enrolled_at: 1,
        last_enrolled_at: 1,
        enroll_count: 1,
        key_epoch: 1,
        key_revoked: false,
        last_seen: 1,
        last_ip: String::new(),
        config_hash: String::new(),
        config_generation: 0,
        dynamic_labels: Vec::new(),
        label_checks: Default::default(),
    }
}

async fn named_of(store: &dyn Store, name: &str) -> Vec<HostId> {
    ok(store.hosts_named(name).await)
}

async fn hosts(store: &dyn Store) {
    let mut hs: Vec<Host> = (0..25).map(sample_host).collect();
    for h in &hs {
        ok(store.put_host(h, Fence::NONE).await);
    }
    hs.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(ok(store.get_host(&hs[3].id).await).as_ref(), Some(&hs[3]));
    assert!(ok(store.get_host(&HostId::from_identity("nobody")).await).is_none());
    // Paging visits every host exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = ok(store.list_hosts(cursor.as_deref(), 10).await);
        assert!(page.items.len() <= 10, "a page holds at most `limit` hosts");
        seen.extend(page.items.iter().map(|h| h.id.clone()));
        pages += 1;
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert!(pages >= 3, "25 hosts at 10 per page take at least 3 pages");
    seen.sort();
    assert_eq!(seen, hs.iter().map(|h| h.id.clone()).collect::<Vec<_>>());
    // Overwrite keeps one record.
    let mut h = hs[0].clone();
    h.labels = vec!["servers".into()];
    h.key_epoch = 2;
    ok(store.put_host(&h, Fence::NONE).await);
    assert_eq!(ok(store.get_host(&h.id).await), Some(h.clone()));

    // A touch moves last_seen and keeps the record; it never creates a host.
    ok(store.touch_host(&h.id, 500, Fence::NONE).await);
    let touched = ok(store.get_host(&h.id).await).expect("host missing");
    assert_eq!(touched.last_seen, 500);
    assert_eq!(touched.labels, h.labels, "a touch keeps the record");
    let listed = ok(store.list_hosts(None, 100).await);
    assert_eq!(
        listed
            .items
            .iter()
            .find(|x| x.id == h.id)
            .map(|x| x.last_seen),
        Some(500)
    );
    ok(store
        .touch_host(&HostId::from_identity("hw:ghost"), 9, Fence::NONE)
        .await);
    assert!(ok(store.get_host(&HostId::from_identity("hw:ghost")).await).is_none());
    assert_eq!(ok(store.list_hosts(None, 100).await).items.len(), 25);
    h.last_seen = 500;

    // Hosts by name: hostname or host identifier, any case; a rename
    // moves the name; two hosts may share one.
    let named = |n: &'static str| async move { ok(store.hosts_named(n).await) };
    let first = hs[0].clone();
    assert_eq!(
        named_of(store, &first.hostname).await,
        vec![first.id.clone()]
    );
    assert_eq!(
        named_of(store, &first.host_identifier.to_uppercase()).await,
        vec![first.id.clone()]
    );
    assert!(named("no-such-host.example.com").await.is_empty());
    let mut renamed = ok(store.get_host(&first.id).await).expect("host missing");
    renamed.hostname = "Renamed.Example.COM".into();
    ok(store.put_host(&renamed, Fence::NONE).await);
    assert!(
        named_of(store, &first.hostname).await.is_empty(),
        "the old name left"
    );
    assert_eq!(named("renamed.example.com").await, vec![first.id.clone()]);
    let mut twin = ok(store.get_host(&hs[1].id).await).expect("host missing");
    twin.hostname = "renamed.example.com".into();
    ok(store.put_host(&twin, Fence::NONE).await);
    let mut both = named("renamed.example.com").await;
    both.sort();
    let mut want = vec![first.id.clone(), twin.id.clone()];
    want.sort();
    assert_eq!(both, want);
    ok(store.put_host(&hs[1], Fence::NONE).await);
    ok(store.put_host(&h, Fence::NONE).await);
    assert_eq!(named("renamed.example.com").await, Vec::<HostId>::new());
    assert_eq!(
        named_of(store, &first.hostname).await,
        vec![first.id.clone()]
    );

    // Label membership follows the host record.
    let sorted = |mut v: Vec<HostId>| {
        v.sort();
        v
    };
    assert_eq!(ok(store.hosts_with_label("all").await).len(), 25);
    // `all` is every host, exactly, and pages in id order.
    let everyone = sorted(
        ok(store.list_hosts(None, 100).await)
            .items
            .into_iter()
            .map(|h| h.id)
            .collect(),
    );
    assert_eq!(sorted(ok(store.hosts_with_label("all").await)), everyone);
    assert_eq!(
        ok(store
            .hosts_with_label_after("all", Some(&everyone[9]), 5)
            .await),
        everyone[10..15].to_vec()
    );
    assert_eq!(
        ok(store
            .hosts_with_label_after("all", Some(&everyone[22]), 5)
            .await),
        everyone[23..].to_vec()
    );
    assert_eq!(ok(store.hosts_with_label("platform:linux").await).len(), 25);
    assert_eq!(
        ok(store.hosts_with_label("servers").await),
        vec![h.id.clone()]
    );
    let mut h2 = hs[1].clone();
    h2.labels = vec!["servers".into(), "db".into()];
    ok(store.put_host(&h2, Fence::NONE).await);
    h.labels = vec!["db".into()];
    ok(store.put_host(&h, Fence::NONE).await);
    assert_eq!(
        ok(store.hosts_with_label("servers").await),
        vec![h2.id.clone()]
    );
    assert_eq!(
        sorted(ok(store.hosts_with_label("db").await)),
        sorted(vec![h.id.clone(), h2.id.clone()])
    );
    assert!(ok(store.hosts_with_label("nobody").await).is_empty());

    // A deleted host is gone from reads, listings, label memberships and
    // names.
    let mut doomed = sample_host(99);
    doomed.labels = vec!["doomed".into()];
    ok(store.put_host(&doomed, Fence::NONE).await);
    assert_eq!(ok(store.hosts_with_label("doomed").await).len(), 1);
    assert!(ok(store.delete_host(&doomed.id, Fence::NONE).await));
    assert!(ok(store.get_host(&doomed.id).await).is_none());
    assert!(ok(store.hosts_with_label("doomed").await).is_empty());
    assert!(!ok(store.hosts_with_label("all").await).contains(&doomed.id));
    assert!(
        named_of(store, &doomed.hostname).await.is_empty(),
        "its name left"
    );
    assert_eq!(ok(store.list_hosts(None, 100).await).items.len(), 25);
    assert!(!ok(store.delete_host(&doomed.id, Fence::NONE).await));

    let sets = ok(store.label_sets().await);
    for want in [
        vec!["all", "platform:linux"],
        vec!["all", "platform:linux", "db"],
        vec!["all", "platform:linux", "db", "servers"],
    ] {
        let want: Vec<String> = want.into_iter().map(String::from).collect();
        assert!(sets.contains(&want), "label set {want:?} in {sets:?}");
    }
}

async fn definitions(store: &dyn Store, sem: Semantics, report: &mut Report) {
    let q = Query {
        name: "users".into(),
        sql: "SELECT * FROM users".into(),
        description: "d".into(),
        updated_at: 5,
    };
    ok(store.put_query(&q).await);
    ok(store
        .put_query(&Query {
            name: "procs".into(),
            sql: "SELECT 1".into(),
            description: String::new(),
            updated_at: 6,
        })
        .await);
    let qs = ok(store.list_queries().await);
    assert_eq!(qs.len(), 2);
    assert!(qs.contains(&q));
    assert!(ok(store.delete_query("procs").await));
    if sem.conditional_writes {
        assert!(
            !ok(store.delete_query("procs").await),
            "a second delete finds nothing"
        );
    } else {
        report
            .not_run
            .push("deleting a missing definition reports false (conditional writes)".into());
    }
    assert_eq!(ok(store.list_queries().await), vec![q]);

    let s = Schedule {
        name: "users".into(),
        query: "users".into(),
        interval: 60,
        snapshot: true,
        removed: false,
        platform: Some("linux".into()),
        version: None,
        shard: Some(50),
        pack: Some("inv".into()),
        labels: vec!["all".into()],
        updated_at: 1,
    };
    ok(store.put_schedule(&s).await);
    assert_eq!(ok(store.list_schedules().await), vec![s]);
    assert!(ok(store.delete_schedule("users").await));
    assert!(ok(store.list_schedules().await).is_empty());

    let mut c = LabelConfig {
        label: "servers".into(),
        ..Default::default()
    };
    c.options.insert("logger_tls_period".into(), json!(10));
    c.file_paths.insert("etc".into(), vec!["/etc/%%".into()]);
    ok(store.put_label_config(&c).await);
    assert_eq!(ok(store.list_label_configs().await), vec![c]);
    assert!(ok(store.delete_label_config("servers").await));
    assert!(ok(store.list_label_configs().await).is_empty());
}

async fn config_blobs_and_generation(store: &dyn Store, sem: Semantics, report: &mut Report) {
    assert_eq!(ok(store.config_generation().await), 0);
    if sem.conditional_writes {
        assert_eq!(ok(store.bump_config_generation().await), 1);
        assert_eq!(ok(store.bump_config_generation().await), 2);
        assert_eq!(ok(store.config_generation().await), 2);
    } else {
        report
            .not_run
            .push("config generation bumps (conditional writes)".into());
    }
    ok(store.put_config_blob("h1", b"{\"schedule\":{}}").await);
    ok(store.put_config_blob("h1", b"{\"schedule\":{}}").await);
    assert_eq!(
        ok(store.get_config_blob("h1").await).as_deref(),
        Some(&b"{\"schedule\":{}}"[..])
    );
    assert!(ok(store.get_config_blob("h2").await).is_none());
}

fn result_batch(host: &HostId, lines: Value) -> LogRecords {
    let body = json!({"log_type": "result", "data": lines});
    let m = ok(parse_object(&ok(serde_json::to_vec(&body))));
    records(host, ok(parse_log(m)), 1_717_496_431_000)
}

async fn logs(store: &dyn Store, sem: Semantics, report: &mut Report) {
    let a = HostId::from_identity("hw:log-a");
    let b = HostId::from_identity("hw:log-b");
    let day = 1_717_496_431i64;
    let batch = result_batch(
        &a,
        json!([
            {"name": "users", "unixTime": day, "columns": {"u": "1"}, "action": "added"},
            {"name": "users", "unixTime": day, "columns": {"u": "2"}, "action": "added"},
            {"name": "procs", "unixTime": day + 5, "snapshot": [{"p": "1"}, {"p": "2"}], "action": "snapshot"},
            {"name": "users", "unixTime": day - 86_400 * 3, "columns": {"u": "0"}, "action": "removed"}
        ]),
    );
    ok(store.append_logs(&batch).await);
    // A re-send (same lines, other member order) stores nothing new.
    let resend = result_batch(
        &a,
        json!([
            {"action": "added", "columns": {"u": "1"}, "unixTime": day, "name": "users"},
            {"name": "users", "unixTime": day, "columns": {"u": "2"}, "action": "added"}
        ]),
    );
    ok(store.append_logs(&resend).await);
    ok(store
        .append_logs(&result_batch(
            &b,
            json!([{"name": "users", "unixTime": day, "columns": {"u": "9"}, "action": "added"}]),
        ))
        .await);

    let all_a = ok(store
        .query_results(&filter(Some(&a), None, 0, i64::MAX, 100))
        .await);
    assert_eq!(all_a.len(), 4, "re-sent lines must not be stored twice");
    assert!(
        all_a.windows(2).all(|w| w[0].unix_time <= w[1].unix_time),
        "results come in time order"
    );
    // Newest first, and every line once when paged by cursor either way.
    let newest = ok(store
        .query_results(&ResultFilter {
            order: LogOrder::NewestFirst,
            ..filter(Some(&a), None, 0, i64::MAX, 2)
        })
        .await);
    let mut reversed = all_a.clone();
    reversed.reverse();
    assert_eq!(newest[..], reversed[..2], "the newest lines first");
    let paged = all_pages(store, filter(Some(&a), None, 0, i64::MAX, 1)).await;
    assert_eq!(paged, all_a, "oldest-first pages of one");
    let paged = all_pages(
        store,
        ResultFilter {
            order: LogOrder::NewestFirst,
            ..filter(Some(&a), None, 0, i64::MAX, 3)
        },
    )
    .await;
    assert_eq!(paged, reversed, "newest-first pages of three");
    if sem.clustering_ranges {
        let users_a = ok(store
            .query_results(&filter(Some(&a), Some("users"), day, day + 1, 100))
            .await);
        assert_eq!(users_a.len(), 2);
        assert!(users_a.iter().all(|r| r.name == "users" && r.host_id == a));
        if sem.fleet_wide_results {
            let everyone = ok(store
                .query_results(&filter(None, Some("users"), day, day + 1, 100))
                .await);
            assert_eq!(everyone.len(), 3);
        }
    } else {
        report.not_run.push(
            "result and status searches over a bounded time window (clustering ranges)".into(),
        );
    }
    if sem.fleet_wide_results {
        let users_all = ok(store
            .query_results(&filter(None, Some("users"), 0, i64::MAX, 100))
            .await);
        assert_eq!(users_all.len(), 4, "users lines of both hosts, all time");
        assert!(
            users_all
                .windows(2)
                .all(|w| w[0].unix_time <= w[1].unix_time)
        );
        let limited = ok(store
            .query_results(&filter(None, Some("users"), 0, i64::MAX, 2))
            .await);
        assert_eq!(limited.len(), 2);
        assert_eq!(
            limited[..],
            users_all[..2],
            "the limit keeps the oldest lines"
        );
    } else {
        assert!(matches!(
            store
                .query_results(&filter(None, Some("users"), 0, i64::MAX, 2))
                .await,
            Err(gatehouse_core::ports::StoreError::Invalid(_))
        ));
        report
            .not_run
            .push("fleet-wide result search by query name (results are kept per host)".into());
        let a_users = ok(store
            .query_results(&filter(Some(&a), Some("users"), 0, i64::MAX, 2))
            .await);
        assert_eq!(a_users.len(), 2, "the limit applies per search");
        assert!(a_users[0].unix_time <= a_users[1].unix_time);
    }
    assert!(matches!(
        store
            .query_results(&filter(None, None, 0, i64::MAX, 2))
            .await,
        Err(gatehouse_core::ports::StoreError::Invalid(_))
    ));
    let snap = all_a
        .iter()
        .find(|r| r.name == "procs")
        .map(|r| (r.kind, r.rows));
    assert_eq!(snap, Some((ResultKind::Snapshot, 2)));

    let status_body = json!({"log_type": "status", "data": [
        {"severity": 0, "unixTime": day, "message": "started", "filename": "x.cpp", "line": 1},
        {"severity": 2, "unixTime": day + 1, "message": "no such table", "filename": "y.cpp", "line": 2}
    ]});
    let st = records(
        &a,
        ok(parse_log(ok(parse_object(&ok(serde_json::to_vec(
            &status_body,
        )))))),
        (day + 60) * 1000,
    );
    ok(store.append_logs(&st).await);
    ok(store.append_logs(&st).await);
    let sts = ok(store.query_status(&a, 0, i64::MAX, 100).await);
    assert_eq!(sts.len(), 2);
    assert_eq!(sts[1].severity, 2);
    assert!(ok(store.query_status(&b, 0, i64::MAX, 100).await).is_empty());
    if sem.clustering_ranges {
        let window = ok(store.query_status(&a, day + 1, day + 2, 100).await);
        assert_eq!(window.len(), 1, "status window [day+1, day+2)");
    }

    // A line from an agent whose clock is years behind is kept by the
    // retention of the day it arrived, and still found by host.
    let skewed_body = json!({"log_type": "result", "data": [
        {"name": "clock", "unixTime": 946_684_800, "columns": {"c": "1"}, "action": "added"}
    ]});
    let skewed = records(
        &b,
        ok(parse_log(ok(parse_object(&ok(serde_json::to_vec(
            &skewed_body,
        )))))),
        (day + 60) * 1000,
    );
    ok(store.append_logs(&skewed).await);
    let found = ok(store
        .query_results(&filter(Some(&b), Some("clock"), 0, i64::MAX, 10))
        .await);
    assert_eq!(found.len(), 1);

    if !sem.explicit_purge {
        report
            .not_run
            .push("retention purge (this store expires lines by TTL)".into());
        return;
    }
    // Retention removes whole days before the cut-off only.
    let removed = ok(store
        .purge_logs_before_day(gatehouse_core::time::unix_day(day - 86_400))
        .await);
    assert_eq!(removed, 1);
    let left = ok(store
        .query_results(&filter(Some(&a), None, 0, i64::MAX, 100))
        .await);
    assert_eq!(left.len(), 3);
    assert_eq!(
        ok(store
            .query_results(&filter(Some(&b), Some("clock"), 0, i64::MAX, 10))
            .await)
        .len(),
        1
    );
}

async fn campaigns(store: &dyn Store) {
    let h1 = HostId::from_identity("hw:c1");
    let h2 = HostId::from_identity("hw:c2");
    let c = Campaign {
        id: "camp1".into(),
        sql: "SELECT 1".into(),
        targets: Targets {
            hosts: vec![h1.clone(), h2.clone()],
            labels: vec![],
            all: false,
        },
        target_count: 2,
        created_at: 10,
        expires_at: 1_000,
        created_by: "admin".into(),
        cancelled_at: None,
        cancelled_by: None,
    };
    ok(store.create_campaign(&c, &[h1.clone(), h2.clone()]).await);
    let c2 = Campaign {
        id: "camp2".into(),
        created_at: 20,
        target_count: 1,
        ..c.clone()
    };
    ok(store.create_campaign(&c2, std::slice::from_ref(&h1)).await);
    assert_eq!(ok(store.get_campaign("camp1").await).as_ref(), Some(&c));
    // Same time as camp2: ties are ordered by id.
    let c0 = Campaign {
        id: "camp0".into(),
        ..c2.clone()
    };
    ok(store
        .create_campaign(&c0, &[HostId::from_identity("hw:c0")])
        .await);
    let listed = ok(store.list_campaigns(None, 10).await);
    assert_eq!(
        listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec!["camp0", "camp2", "camp1"],
        "newest first"
    );
    // Pages continue after the last item of the previous one.
    let ids = |v: Vec<Campaign>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(ids(ok(store.list_campaigns(None, 1).await)), vec!["camp0"]);
    assert_eq!(
        ids(ok(store.list_campaigns(Some((20, "camp0")), 1).await)),
        vec!["camp2"]
    );
    assert_eq!(
        ids(ok(store.list_campaigns(Some((20, "camp2")), 5).await)),
        vec!["camp1"]
    );
    assert!(ok(store.list_campaigns(Some((10, "camp1")), 5).await).is_empty());

    let open = ok(store.open_deliveries(&h1).await);
    assert_eq!(open.len(), 2);
    assert!(open.iter().all(|(_, d)| d.state == DeliveryState::Queued));

    let mut d = ok(store.get_delivery("camp1", &h1).await).expect("delivery missing");
    d.state = DeliveryState::Delivered;
    d.delivered_at = Some(50);
    d.delivery_count = 1;
    assert!(ok(store.put_delivery(&d, Fence::NONE).await), "written");
    assert_eq!(ok(store.get_delivery("camp1", &h1).await), Some(d.clone()));

    let r = CampaignResult {
        campaign_id: "camp1".into(),
        host_id: h1.clone(),
        rows: vec![json!({"a": "1"})],
        status: 0,
        message: String::new(),
        stats: Map::from_iter([("wall_time_ms".to_owned(), json!(3))]),
        received_at: 60,
    };
    let failed = CampaignResult {
        campaign_id: "camp2".into(),
        status: 1,
        message: "no such table: foo".into(),
        rows: vec![],
        ..r.clone()
    };
    ok(store
        .record_results(&[r.clone(), failed], Fence::NONE)
        .await);
    // Recording twice (a duplicate write) is harmless.
    ok(store
        .record_results(std::slice::from_ref(&r), Fence::NONE)
        .await);
    assert!(ok(store.open_deliveries(&h1).await).is_empty());
    assert_eq!(ok(store.open_deliveries(&h2).await).len(), 1);
    assert_eq!(ok(store.list_results("camp1").await), vec![r.clone()]);
    assert_eq!(ok(store.get_result("camp1", &h1).await), Some(r));
    assert_eq!(ok(store.get_result("camp1", &h2).await), None);
    assert_eq!(ok(store.get_result("no-such-campaign", &h1).await), None);
    let ds = ok(store.list_deliveries("camp1").await);
    assert_eq!(ds.len(), 2);
    let state = |h: &HostId| ds.iter().find(|d| &d.host_id == h).map(|d| d.state);
    assert_eq!(state(&h1), Some(DeliveryState::Answered));
    assert_eq!(state(&h2), Some(DeliveryState::Queued));
    assert_eq!(
        ok(store.get_delivery("camp2", &h1).await).map(|d| d.state),
        Some(DeliveryState::Failed)
    );
    // A final delivery stays final: delivering or expiring it again
    // writes nothing.
    let again = Delivery {
        delivered_at: Some(70),
        delivery_count: 2,
        ..d.clone()
    };
    assert!(!ok(store.put_delivery(&again, Fence::NONE).await));
    let late = Delivery {
        state: DeliveryState::Expired,
        finished_at: Some(80),
        ..d
    };
    assert!(!ok(store.put_delivery(&late, Fence::NONE).await));
    assert_eq!(
        ok(store.get_delivery("camp1", &h1).await).map(|d| d.state),
        Some(DeliveryState::Answered)
    );
    assert!(ok(store.open_deliveries(&h1).await).is_empty());

    // Expiring a delivery closes it.
    let mut d2 = ok(store.get_delivery("camp1", &h2).await).expect("delivery missing");
    d2.state = DeliveryState::Expired;
    d2.finished_at = Some(2_000);
    assert!(ok(store.put_delivery(&d2, Fence::NONE).await));
    assert!(ok(store.open_deliveries(&h2).await).is_empty());

    // A cancelled campaign's record is rewritten; its deliveries stay.
    let mut cancelled = c2.clone();
    cancelled.cancel("alice", 30);
    assert!(ok(store.update_campaign(&cancelled).await));
    assert_eq!(
        ok(store.get_campaign("camp2").await),
        Some(cancelled.clone())
    );
    let listed = ok(store.list_campaigns(None, 10).await);
    assert!(listed.contains(&cancelled), "listed as rewritten");
    assert_eq!(ok(store.list_deliveries("camp2").await).len(), 1);
    let ghost = Campaign {
        id: "never-created".into(),
        ..cancelled
    };
    assert!(!ok(store.update_campaign(&ghost).await));
    assert_eq!(ok(store.get_campaign("never-created").await), None);
}

/// A deposed owner (smaller token) writing after its successor: its record,
/// last-seen and delivery writes never supersede the successor's.
async fn fencing(store: &dyn Store, sem: Semantics, report: &mut Report) {
    if sem.fencing == Fencing::NotChecked {
        report.not_run.push(
            "fenced writes (a deposed owner's write never supersedes its successor's): \
             needs client write timestamps"
                .into(),
        );
        return;
    }
    let stale_result = |r: Result<(), StoreError>, newer: u64| match (sem.fencing, r) {
        (
            Fencing::Rejects,
            Err(StoreError::Fenced {
                presented, held, ..
            }),
        ) => {
            assert_eq!((presented, held), (7, newer));
        }
        (Fencing::Supersedes, Ok(())) => {}
        (_, other) => panic!("a stale fenced write answered {other:?}"),
    };
    let mut h = sample_host(90_001);
    h.last_seen = 1_000;
    ok(store.put_host(&h, Fence(10)).await);
    let mut stale = h.clone();
    stale.hostname = "deposed-owner-copy".into();
    stale.key_epoch = h.key_epoch + 5;
    stale_result(store.put_host(&stale, Fence(7)).await, 10);
    stale_result(store.touch_host(&h.id, 9_000, Fence(7)).await, 10);
    let now = ok(store.get_host(&h.id).await).expect("host missing");
    assert_eq!(now.hostname, h.hostname, "stale record write won");
    assert_eq!(now.key_epoch, h.key_epoch);
    assert_eq!(now.last_seen, 1_000, "stale last-seen write won");
    // The owner's own later writes (same token, then a renewed one) land.
    ok(store.touch_host(&h.id, 2_000, Fence(10)).await);
    h.hostname = "renewed".into();
    h.last_seen = 2_000;
    ok(store.put_host(&h, Fence(12)).await);
    assert_eq!(ok(store.get_host(&h.id).await), Some(h.clone()));

    // Deliveries: the successor marked it delivered; the deposed owner's
    // "expired" and its late answer do not supersede that.
    let c = Campaign {
        id: "fenced-camp".into(),
        sql: "SELECT 1".into(),
        targets: Targets {
            hosts: vec![h.id.clone()],
            ..Default::default()
        },
        target_count: 1,
        created_at: 100,
        expires_at: i64::MAX,
        created_by: "conformance".into(),
        cancelled_at: None,
        cancelled_by: None,
    };
    ok(store.create_campaign(&c, std::slice::from_ref(&h.id)).await);
    let mut d = ok(store.get_delivery(&c.id, &h.id).await).expect("delivery");
    d.state = DeliveryState::Delivered;
    d.delivered_at = Some(150);
    d.delivery_count = 1;
    ok(store.put_delivery(&d, Fence(12)).await);
    let expired = Delivery {
        state: DeliveryState::Expired,
        finished_at: Some(160),
        ..d.clone()
    };
    stale_result(store.put_delivery(&expired, Fence(7)).await.map(|_| ()), 12);
    assert_eq!(ok(store.get_delivery(&c.id, &h.id).await), Some(d.clone()));
    let answer = CampaignResult {
        campaign_id: c.id.clone(),
        host_id: h.id.clone(),
        rows: vec![],
        status: 1,
        message: "stale".into(),
        stats: Map::new(),
        received_at: 170,
    };
    stale_result(
        store
            .record_results(std::slice::from_ref(&answer), Fence(7))
            .await,
        12,
    );
    assert_eq!(
        ok(store.get_delivery(&c.id, &h.id).await).map(|d| d.state),
        Some(DeliveryState::Delivered)
    );
    assert_eq!(ok(store.open_deliveries(&h.id).await).len(), 1);
}

async fn carves(store: &dyn Store, sem: Semantics, report: &mut Report) {
    let s = CarveSession {
        session_id: "sess-1".into(),
        host_id: HostId::from_identity("hw:carver"),
        carve_id: "carve-guid".into(),
        request_id: "req".into(),
        block_count: 3,
        block_size: 4,
        carve_size: 10,
        blocks_received: 0,
        state: CarveState::Receiving,
        created_at: 1,
        completed_at: None,
        sha256: None,
        format: None,
    };
    ok(store.create_carve(&s).await);
    if sem.conditional_writes {
        assert!(
            store.create_carve(&s).await.is_err(),
            "session ids are unique"
        );
    } else {
        report
            .not_run
            .push("carve session uniqueness (conditional writes)".into());
    }
    assert_eq!(s.block_len(0), 4);
    assert_eq!(s.block_len(2), 2);
    // Out of order, with a repeat.
    let o = ok(store.put_carve_block("sess-1", 2, b"ij").await);
    assert_eq!((o.blocks_received, o.new_block), (1, true));
    let o = ok(store.put_carve_block("sess-1", 0, b"abcd").await);
    assert_eq!(o.blocks_received, 2);
    let o = ok(store.put_carve_block("sess-1", 0, b"abcd").await);
    assert_eq!((o.blocks_received, o.new_block), (2, false));
    let o = ok(store.put_carve_block("sess-1", 1, b"efgh").await);
    assert_eq!(o.blocks_received, 3);
    assert!(store.put_carve_block("nope", 0, b"x").await.is_err());
    let mut assembled = Vec::new();
    for i in 0..3 {
        assembled
            .extend_from_slice(&ok(store.get_carve_block("sess-1", i).await).unwrap_or_default());
    }
    assert_eq!(assembled, b"abcdefghij");
    let mut done = ok(store.get_carve("sess-1").await).expect("carve missing");
    assert_eq!(done.blocks_received, 3);
    done.state = CarveState::Complete;
    done.sha256 = Some("abc".into());
    ok(store.update_carve(&done).await);
    assert_eq!(ok(store.list_carves(None, 10).await), vec![done.clone()]);
    assert!(
        ok(store
            .list_carves(Some((done.created_at, &done.session_id)), 10)
            .await)
        .is_empty(),
        "nothing after the last carve"
    );
}

async fn users_and_tokens(store: &dyn Store) {
    let alice = User {
        name: "alice".into(),
        role: Role::Operator,
        created_at: 10,
        created_by: "admin".into(),
        disabled: false,
        updated_at: 10,
    };
    let bob = User {
        name: "bob".into(),
        role: Role::Observer,
        ..alice.clone()
    };
    ok(store.put_user(&alice).await);
    ok(store.put_user(&bob).await);
    assert_eq!(ok(store.get_user("alice").await), Some(alice.clone()));
    assert_eq!(ok(store.get_user("carol").await), None);
    let mut users = ok(store.list_users().await);
    users.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(users, vec![alice.clone(), bob.clone()]);
    // A role change is an update of the same user.
    let promoted = User {
        role: Role::Admin,
        updated_at: 20,
        ..bob.clone()
    };
    ok(store.put_user(&promoted).await);
    assert_eq!(ok(store.get_user("bob").await), Some(promoted));
    assert_eq!(ok(store.list_users().await).len(), 2);

    let t1 = ApiToken {
        id: "tok-1".into(),
        user: "alice".into(),
        secret_sha256: gatehouse_core::ids::sha256_hex(b"alice-secret"),
        description: "laptop".into(),
        created_at: 11,
        created_by: "admin".into(),
        expires_at: Some(1_000),
        revoked: false,
        kind: gatehouse_core::model::TokenKind::Api,
        idle_expires_at: None,
    };
    let t2 = ApiToken {
        id: "tok-2".into(),
        secret_sha256: gatehouse_core::ids::sha256_hex(b"alice-ci"),
        expires_at: None,
        ..t1.clone()
    };
    ok(store.put_token(&t1).await);
    ok(store.put_token(&t2).await);
    assert_eq!(
        ok(store.token_by_hash(&t1.secret_sha256).await),
        Some(t1.clone())
    );
    assert_eq!(
        ok(store
            .token_by_hash(&gatehouse_core::ids::sha256_hex(b"guess"))
            .await),
        None
    );
    assert!(t1.is_usable(999) && !t1.is_usable(1_000) && t2.is_usable(i64::MAX));
    let revoked = ApiToken {
        revoked: true,
        ..t1.clone()
    };
    ok(store.put_token(&revoked).await);
    assert!(ok(store.token_by_hash(&t1.secret_sha256).await).is_some_and(|t| !t.is_usable(0)));
    let mut listed = ok(store.list_tokens().await);
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, vec![revoked, t2.clone()]);
    // A token id keeps its secret.
    let other = ApiToken {
        secret_sha256: gatehouse_core::ids::sha256_hex(b"other"),
        ..t2
    };
    assert!(matches!(
        store.put_token(&other).await,
        Err(gatehouse_core::ports::StoreError::Conflict(_))
    ));
    // A session: it ends when idle too; kept with its kind.
    let session = ApiToken {
        id: "ses-1".into(),
        secret_sha256: gatehouse_core::ids::sha256_hex(b"session"),
        kind: gatehouse_core::model::TokenKind::Session,
        expires_at: Some(5_000),
        idle_expires_at: Some(2_000),
        ..t1.clone()
    };
    ok(store.put_token(&session).await);
    let got = ok(store.token_by_hash(&session.secret_sha256).await);
    assert_eq!(got.as_ref(), Some(&session));
    assert!(session.is_usable(1_999) && !session.is_usable(2_000));

    // Passwords: apart from users, replaced when set again.
    assert_eq!(ok(store.credential("alice").await), None);
    let c = gatehouse_core::model::Credential {
        user: "alice".into(),
        password_phc: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        set_at: 12,
        set_by: "admin".into(),
    };
    ok(store.put_credential(&c).await);
    assert_eq!(ok(store.credential("alice").await), Some(c.clone()));
    let again = gatehouse_core::model::Credential {
        password_phc: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdDI$aGFzaDI".into(),
        set_at: 13,
        set_by: "alice".into(),
        ..c
    };
    ok(store.put_credential(&again).await);
    assert_eq!(ok(store.credential("alice").await), Some(again));
    assert_eq!(ok(store.credential("bob").await), None);
    assert_eq!(ok(store.list_users().await).len(), 2, "not listed as users");
}

async fn enroll_secrets(store: &dyn Store) {
    let s1 = EnrollSecret {
        id: "servers".into(),
        secret_sha256: gatehouse_core::ids::sha256_hex(b"s3cret-1"),
        labels: vec!["servers".into()],
        created_at: 1,
        expires_at: None,
        revoked: false,
        created_by: "admin".into(),
    };
    let s2 = EnrollSecret {
        id: "laptops".into(),
        secret_sha256: gatehouse_core::ids::sha256_hex(b"s3cret-2"),
        labels: vec![],
        expires_at: Some(100),
        ..s1.clone()
    };
    ok(store.put_enroll_secret(&s1).await);
    ok(store.put_enroll_secret(&s2).await);
    assert_eq!(
        ok(store.enroll_secret_by_hash(&s1.secret_sha256).await).as_ref(),
        Some(&s1)
    );
    assert!(
        ok(store
            .enroll_secret_by_hash(&gatehouse_core::ids::sha256_hex(b"nope"))
            .await)
        .is_none()
    );
    let mut listed = ok(store.list_enroll_secrets().await);
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, vec![s2.clone(), s1.clone()]);
    assert!(s1.is_usable(50) && s2.is_usable(50) && !s2.is_usable(100));
    // Revocation is an update; the value of an id never changes.
    let revoked = EnrollSecret {
        revoked: true,
        ..s1.clone()
    };
    ok(store.put_enroll_secret(&revoked).await);
    let found = ok(store.enroll_secret_by_hash(&s1.secret_sha256).await);
    assert!(found.is_some_and(|f| f.revoked && !f.is_usable(0)));
    let changed = EnrollSecret {
        secret_sha256: gatehouse_core::ids::sha256_hex(b"other"),
        ..s1
    };
    assert!(matches!(
        store.put_enroll_secret(&changed).await,
        Err(gatehouse_core::ports::StoreError::Conflict(_))
    ));
}

async fn audit(store: &dyn Store, sem: Semantics, report: &mut Report) {
    let ev = |id: &str, at: i64| AuditEvent {
        id: id.into(),
        at,
        actor: "alice".into(),
        action: "query.put".into(),
        target: id.into(),
        outcome: "ok".into(),
        detail: json!({"n": at}),
    };
    let day = 86_400_000;
    for e in [
        ev("a", 1_000),
        ev("c", 2_000),
        ev("b", 2_000),
        ev("e", 2 * day),
        ev("d", 3_000),
    ] {
        ok(store.append_audit(&e).await);
    }
    let ids = |v: Vec<AuditEvent>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(ok(store.list_audit(None, 10).await)),
        vec!["e", "d", "b", "c", "a"],
        "newest first, ties by id"
    );
    assert_eq!(ids(ok(store.list_audit(None, 2).await)), vec!["e", "d"]);
    assert_eq!(ok(store.list_audit(None, 1).await)[0], ev("e", 2 * day));
    if sem.clustering_ranges {
        assert_eq!(
            ids(ok(store.list_audit(Some((3_000, "d")), 2).await)),
            vec!["b", "c"]
        );
        assert_eq!(
            ids(ok(store.list_audit(Some((2_000, "c")), 10).await)),
            vec!["a"]
        );
    } else {
        report
            .not_run
            .push("audit log pages after the first (clustering ranges)".into());
    }
}

async fn rules_and_alerts(store: &dyn Store, sem: Semantics, report: &mut Report) {
    // Label queries are definitions like the others.
    let lq = gatehouse_core::model::LabelQuery {
        label: "has-docker".into(),
        sql: "SELECT 1 FROM processes WHERE name = 'dockerd'".into(),
        interval: 600,
        platforms: vec!["linux".into()],
        description: String::new(),
        updated_at: 1,
    };
    ok(store.put_label_query(&lq).await);
    assert_eq!(ok(store.list_label_queries().await), vec![lq.clone()]);
    assert!(ok(store.delete_label_query(&lq.label).await));
    assert!(ok(store.list_label_queries().await).is_empty());

    use gatehouse_core::rules::{Action, Alert, DeadLetter, Rule, Trigger, pending_outcomes};
    let rule = |name: &str| Rule {
        name: name.into(),
        description: String::new(),
        enabled: true,
        when: Trigger::HostSilent {
            after_secs: 600,
            labels: vec!["prod".into()],
        },
        actions: vec![Action::Log],
        throttle_secs: 0,
        updated_at: 1,
    };
    ok(store.put_rule(&rule("silent")).await);
    ok(store.put_rule(&rule("drift")).await);
    let changed = Rule {
        enabled: false,
        ..rule("silent")
    };
    ok(store.put_rule(&changed).await);
    let mut rules = ok(store.list_rules().await);
    rules.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(rules, vec![rule("drift"), changed]);
    assert!(ok(store.delete_rule("drift").await));
    assert_eq!(ok(store.list_rules().await).len(), 1);

    let host = sample_host(7).id;
    let alert = |id: &str, at: i64| Alert {
        id: id.into(),
        at,
        rule: "silent".into(),
        event: "host_silent".into(),
        host_id: host.clone(),
        hostname: "h".into(),
        summary: format!("alert {id}"),
        detail: json!({"last_seen": at}),
        actions: pending_outcomes(&[Action::Log]),
    };
    let day = 86_400_000;
    for a in [alert("a", 1_000), alert("b", 2_000), alert("c", day + 5)] {
        ok(store.put_alert(&a).await);
    }
    // Re-putting the same event replaces it (outcomes are updated in place).
    let mut delivered = alert("b", 2_000);
    delivered.actions[0].state = gatehouse_core::rules::ActionState::Delivered;
    ok(store.put_alert(&delivered).await);
    assert_eq!(
        ok(store.get_alert(2_000, "b").await),
        Some(delivered.clone())
    );
    assert_eq!(ok(store.get_alert(2_001, "b").await), None);
    let ids = |v: Vec<Alert>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(ids(ok(store.list_alerts(None, 10).await)), ["c", "b", "a"]);
    if sem.clustering_ranges {
        assert_eq!(
            ids(ok(store.list_alerts(Some((2_000, "b")), 10).await)),
            ["a"]
        );
    } else {
        report
            .not_run
            .push("alert history pages after the first (clustering ranges)".into());
    }

    let dead = DeadLetter {
        id: DeadLetter::id_for("b", 0),
        alert: delivered,
        action_index: 0,
        url: "https://hooks.example.com/x".into(),
        attempts: 5,
        last_error: "503".into(),
        dead_at: 3_000,
    };
    ok(store.put_dead_letter(&dead).await);
    assert_eq!(ok(store.get_dead_letter("b.0").await), Some(dead.clone()));
    assert_eq!(ok(store.list_dead_letters().await), vec![dead]);
    assert!(ok(store.delete_dead_letter("b.0").await));
    assert!(ok(store.list_dead_letters().await).is_empty());
    assert_eq!(ok(store.get_dead_letter("b.0").await), None);
}

async fn meta(store: &dyn Store) {
    assert!(ok(store.get_meta("absent").await).is_none());
    ok(store.put_meta("k", b"v1").await);
    ok(store.put_meta("k", b"v2").await);
    assert_eq!(ok(store.get_meta("k").await).as_deref(), Some(&b"v2"[..]));
    // A healthy store takes every write.
    let h = ok(store.health().await);
    assert_eq!(h.writes_refused, None, "{h:?}");
    assert_eq!(h.logs_refused, None, "{h:?}");
}
