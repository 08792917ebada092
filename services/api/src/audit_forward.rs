//! Each call's final audit record reaches the log destinations at least
//! once. A record is stored, then appended to the forward log; a process
//! that died between the two would leave it stored and never forwarded.
//!
//! So every api process keeps a mark beside the forward log
//! (`events/audit/<writer>`, renewed every 2 s while a destination is
//! defined): a time at or before every record it still has in hand (the
//! oldest call in flight, else now), and when it was renewed. A mark not
//! renewed for 30 s belongs to a process that stopped without removing it
//! (a crash): any api process (its successor at start, or another every
//! 30 s) appends again the final records stored from that mark to 10 s past
//! its renewal, then removes it. The forward log drops an id it took within
//! its duplicate window; a record it took earlier, before a restart, is
//! delivered twice (with its `id`), so duplicates are bounded by the records
//! of the seconds before the crash. A call cut short by the crash stays
//! `pending` in the audit log and is not forwarded. A process removes its
//! own mark when it stops cleanly.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_core::model::AuditEvent;
use gatehouse_core::ports::{AuditStore, Forwarding};

use crate::Admin;

/// Where the marks are kept, one key per api process.
pub const MARKS: &str = "events/audit/";
/// How often a process renews its mark.
const RENEW: Duration = Duration::from_secs(2);
/// A mark this much older than now belongs to a stopped process.
pub const STALE_MS: i64 = 30_000;
/// How far past its last renewal a stopped process may have stored.
pub const PAST_MS: i64 = 10_000;
/// Audit rows read per page while looking for a stopped process's.
const PAGE: usize = 500;

/// The records this process holds between their store write and their
/// append (see the module's comment).
#[derive(Debug)]
pub struct AuditOutbox {
    writer: String,
    held: Arc<Mutex<BTreeSet<(i64, String)>>>,
}

impl Default for AuditOutbox {
    fn default() -> Self {
        Self {
            writer: format!("{MARKS}{}", uuid::Uuid::new_v4()),
            held: Arc::default(),
        }
    }
}

/// A record in hand until this is dropped (appended, or its call ended
/// without a final record).
#[derive(Debug)]
pub struct Held {
    held: Arc<Mutex<BTreeSet<(i64, String)>>>,
    key: (i64, String),
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut h) = self.held.lock() {
            h.remove(&self.key);
        }
    }
}

impl AuditOutbox {
    /// Holds `row` (by its time and id) until the guard is dropped.
    pub fn hold(&self, row: &AuditEvent) -> Held {
        let key = (row.at, row.id.clone());
        if let Ok(mut h) = self.held.lock() {
            h.insert(key.clone());
        }
        Held {
            held: self.held.clone(),
            key,
        }
    }

    /// The mark at `now`: no record this process still holds is older.
    pub fn mark(&self, now: i64) -> i64 {
        self.held
            .lock()
            .ok()
            .and_then(|h| h.first().map(|(at, _)| *at))
            .map_or(now, |at| at.min(now))
    }

    /// This process's key among the marks.
    pub fn writer(&self) -> &str {
        &self.writer
    }
}

/// A mark as kept: `"<mark> <renewed>"`, both in ms.
fn encode(mark: i64, renewed: i64) -> Bytes {
    Bytes::from(format!("{mark} {renewed}"))
}

fn decode(v: &[u8]) -> Option<(i64, i64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (mark, renewed) = s.split_once(' ')?;
    Some((mark.parse().ok()?, renewed.parse().ok()?))
}

/// Renews this process's mark and, with `sweep`, forwards what stopped
/// processes left (the api does one before it serves its first call, then
/// [`keep`] every 2 s).
pub async fn renew(admin: &Admin, sweep: bool) {
    let Some(f) = admin.forward.as_ref().filter(|f| f.is_active()) else {
        return;
    };
    let outbox = &admin.audit_outbox;
    let now = admin.now();
    if let Err(e) = f
        .log
        .put_setting(outbox.writer(), Some(encode(outbox.mark(now), now)))
        .await
    {
        tracing::warn!(error = %e, "the audit log's forwarding mark could not be renewed");
    }
    if !sweep {
        return;
    }
    match self::sweep(admin.store.as_ref(), f, outbox.writer(), now).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            records = n,
            "audit records of a stopped process's last seconds handed to the forward log again (it drops those it already holds)"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "looking for audit records a stopped process did not forward failed; trying again in 30 s")
        }
    }
}

/// Renews the mark every 2 s and sweeps every 30 s until `shutdown`, then
/// removes this process's mark.
pub async fn keep(admin: Arc<Admin>, shutdown: gatehouse_runtime::Shutdown) {
    if admin.forward.is_none() {
        return;
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + RENEW, RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tick.tick() => {}
        }
        ticks += 1;
        renew(&admin, ticks.is_multiple_of(15)).await;
    }
    // Every call has ended: nothing of this process's is left in hand.
    if let Some(f) = admin.forward.as_ref().filter(|f| f.is_active())
        && let Err(e) = f.log.put_setting(admin.audit_outbox.writer(), None).await
    {
        tracing::warn!(error = %e, "the audit log's forwarding mark could not be removed; another process will sweep it");
    }
}

/// Appends again the final audit records of every stopped process's
/// window (marks other than `own` not renewed for [`STALE_MS`] at `now`),
/// oldest first, and removes those marks. Returns how many records were
/// handed to the forward log (some may be dropped there as duplicates).
pub async fn sweep(
    store: &dyn AuditStore,
    f: &Forwarding,
    own: &str,
    now: i64,
) -> Result<usize, String> {
    let mut handed = 0;
    for (key, value) in f.log.settings(MARKS).await.map_err(|e| e.to_string())? {
        if key == own {
            continue;
        }
        let Some((mark, renewed)) = decode(&value) else {
            tracing::warn!(key, "an unreadable audit forwarding mark removed");
            f.log
                .put_setting(&key, None)
                .await
                .map_err(|e| e.to_string())?;
            continue;
        };
        if now - renewed < STALE_MS {
            continue;
        }
        let rows = final_records(store, mark, renewed + PAST_MS).await?;
        for row in &rows {
            let payload =
                gatehouse_bus::events::encode_forward_events("audit", std::slice::from_ref(row));
            f.append(&format!("audit:{}", row.id), 1, payload)
                .await
                .map_err(|e| e.to_string())?;
        }
        handed += rows.len();
        f.log
            .put_setting(&key, None)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(handed)
}

/// The final (not `pending`) records stored at `from ..= to`, oldest first.
async fn final_records(
    store: &dyn AuditStore,
    from: i64,
    to: i64,
) -> Result<Vec<AuditEvent>, String> {
    let mut out = Vec::new();
    // From (to + 1, ""): stores order one time's ids differently, so the
    // first page may hold records at `to + 1` (filtered out below).
    let mut before = (to.saturating_add(1), String::new());
    loop {
        let page = store
            .list_audit(Some((before.0, &before.1)), PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let full = page.len() == PAGE;
        let Some(last) = page.last() else { break };
        before = (last.at, last.id.clone());
        let done = last.at < from || !full;
        out.extend(
            page.into_iter()
                .filter(|r| (from..=to).contains(&r.at) && r.outcome != "pending"),
        );
        if done {
            break;
        }
    }
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::ports::ForwardLog;
    use gatehouse_forward::log::{EmbeddedForwardLog, Retention};

    fn row(id: &str, at: i64, outcome: &str) -> AuditEvent {
        AuditEvent {
            id: id.into(),
            at,
            actor: "admin".into(),
            action: "query.put".into(),
            target: "q".into(),
            outcome: outcome.into(),
            detail: serde_json::json!({}),
        }
    }

    async fn forwarded_ids(log: &EmbeddedForwardLog) -> Vec<String> {
        let mut ids = Vec::new();
        for e in log.read(0, 100).await.unwrap() {
            if let gatehouse_bus::events::Forwarded::Events { kind, events } =
                gatehouse_bus::events::decode_forward(e.payload).unwrap()
            {
                assert_eq!(kind, "audit");
                for ev in events {
                    ids.push(ev["id"].as_str().unwrap().to_owned());
                }
            }
        }
        ids
    }

    #[test]
    fn the_mark_is_the_oldest_record_in_hand_or_now() {
        let o = AuditOutbox::default();
        assert_eq!(o.mark(5_000), 5_000);
        let a = o.hold(&row("a", 1_000, "pending"));
        let b = o.hold(&row("b", 2_000, "accepted"));
        assert_eq!(o.mark(5_000), 1_000);
        drop(a);
        assert_eq!(o.mark(5_000), 2_000);
        drop(b);
        assert_eq!(o.mark(5_000), 5_000);
        assert!(o.writer().starts_with(MARKS));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_processs_stored_records_are_handed_to_the_destinations_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = gatehouse_store::EmbeddedStore::open(&dir.path().join("store")).unwrap();
        let log = Arc::new(
            EmbeddedForwardLog::open(
                &dir.path().join("forward"),
                Retention::default(),
                gatehouse_core::time::system_clock(),
            )
            .unwrap(),
        );
        let f = Forwarding {
            log: log.clone(),
            active: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        };
        // A process crashed after storing these, its mark at 100_000,
        // renewed at 101_000.
        let (mark, renewed) = (100_000, 101_000);
        for r in [
            row("before-the-mark", mark - 1, "accepted"),
            row("at-the-mark", mark, "accepted"),
            row("cut-short", mark + 500, "pending"),
            row("denied", mark + 600, "denied"),
            row("last", renewed + PAST_MS, "failed"),
            row("later", renewed + PAST_MS + 1, "accepted"),
        ] {
            store.append_audit(&r).await.unwrap();
        }
        log.put_setting("events/audit/dead", Some(encode(mark, renewed)))
            .await
            .unwrap();
        // A live process's mark (renewed 1 s ago) is left alone.
        let now = renewed + STALE_MS;
        log.put_setting("events/audit/live", Some(encode(mark, now - 1_000)))
            .await
            .unwrap();

        // Not yet stale: nothing.
        assert_eq!(
            sweep(&store, &f, "events/audit/own", now - 1)
                .await
                .unwrap(),
            0
        );
        assert!(forwarded_ids(&log).await.is_empty());

        assert_eq!(sweep(&store, &f, "events/audit/own", now).await.unwrap(), 3);
        assert_eq!(forwarded_ids(&log).await, ["at-the-mark", "denied", "last"]);
        let left: Vec<String> = log
            .settings(MARKS)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(left, ["events/audit/live"]);
        // Swept once: the mark is gone.
        assert_eq!(sweep(&store, &f, "events/audit/own", now).await.unwrap(), 0);
        assert_eq!(forwarded_ids(&log).await.len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_processs_window_is_read_across_pages() {
        let dir = tempfile::tempdir().unwrap();
        let store = gatehouse_store::EmbeddedStore::open(&dir.path().join("store")).unwrap();
        for i in 0..(PAGE as i64 * 2 + 7) {
            store
                .append_audit(&row(&format!("r{i:05}"), 10_000 + i, "accepted"))
                .await
                .unwrap();
        }
        let rows = final_records(&store, 10_003, 10_000 + PAGE as i64 * 2)
            .await
            .unwrap();
        assert_eq!(rows.len(), PAGE * 2 - 2);
        assert_eq!(rows.first().unwrap().id, "r00003");
        assert_eq!(rows.last().unwrap().id, format!("r{:05}", PAGE * 2));
    }
}
