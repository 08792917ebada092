//! The embedded store's result and status logs: keys in minute slots with
//! an index of each host's slots (ADR 0041), writes idempotent on the line
//! id, purge by day; each line stored as its text and the little its key
//! and text do not say (ADR 0040).
//!
//! Why minute slots: lines arrive in time order from every host at once.
//! Keyed day · host (as before ADR 0041), every flushed table overlapped
//! the whole day's lines and leveled compaction rewrote each line about
//! fourteen times as the day grew. Keyed minute · host, a flushed table
//! overlaps only the current minute's lines; older minutes' tables move
//! down the levels without a rewrite. A host's lines are then spread over
//! many slots, so `slots` records which slots hold them and a search by
//! host reads only those.

use std::collections::BTreeMap;
use std::ops::Bound;

use gatehouse_core::logs::{bucket_time, stored_result, stored_status};
use gatehouse_core::ports::LogStore;

use super::*;

/// Seconds a slot spans.
const SLOT_SECS: i64 = 60;
/// Slots in a day.
const DAY_SLOTS: u32 = 86_400 / SLOT_SECS as u32;
/// Set in the first u32 of a slot key; clear in the day keys of stores
/// before ADR 0041 (a day number is far below 2^31, a minute number is
/// too until the year 6053).
const SLOT_TAG: u32 = 1 << 31;
/// The kind byte of an index entry.
const RESULTS: u8 = b'r';
const STATUS: u8 = b's';

/// A line's slot: the minute it is bucketed by (the agent's when its clock
/// is plausible, `logs::bucket_time`), and whether that is the receive
/// minute because the agent's clock was not.
fn slot_of(unix_time: i64, received_at: i64) -> (u32, bool) {
    let (t, skewed) = bucket_time(unix_time, received_at);
    let minute = u32::try_from(t.max(0) / SLOT_SECS).unwrap_or(u32::MAX);
    (minute & !SLOT_TAG, skewed)
}

/// The u32 bytes begin with (a key's slot or day, an index entry's day or
/// minute).
fn leading_u32(k: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(k.get(..4)?.try_into().ok()?))
}

/// The first four bytes of the keys of slot `minute`.
fn slot_prefix(minute: u32) -> [u8; 4] {
    (SLOT_TAG | minute).to_be_bytes()
}

/// The start of a line's key: its slot and its host, with room for
/// `rest` more bytes.
fn key_start(unix_time: i64, received_at: i64, host: &HostId, rest: usize) -> Vec<u8> {
    let (minute, _) = slot_of(unix_time, received_at);
    let mut k = Vec::with_capacity(4 + 32 + rest);
    k.extend_from_slice(&slot_prefix(minute));
    k.extend_from_slice(host.as_str().as_bytes());
    k
}

/// slot · host · name · 0 · agent time · line id.
fn result_key(r: &ResultLog) -> Vec<u8> {
    let rest = r.name.len() + 1 + 8 + r.line_id.len();
    let mut k = key_start(r.unix_time, r.received_at, &r.host_id, rest);
    k.extend_from_slice(r.name.as_bytes());
    k.push(0);
    k.extend_from_slice(&(r.unix_time.max(0) as u64).to_be_bytes());
    k.extend_from_slice(r.line_id.as_bytes());
    k
}

/// slot · host · agent time · line id.
fn status_key(s: &StatusLog) -> Vec<u8> {
    let mut k = key_start(s.unix_time, s.received_at, &s.host_id, 8 + s.line_id.len());
    k.extend_from_slice(&(s.unix_time.max(0) as u64).to_be_bytes());
    k.extend_from_slice(s.line_id.as_bytes());
    k
}

/// The index entry saying that slot `minute` holds lines of `kind` from
/// `host`: day · kind · host · minute · skewed (1 when the lines are there
/// by their receive time). The day first, so retention drops whole days.
fn slot_entry(kind: u8, host: &HostId, minute: u32, skewed: bool) -> Vec<u8> {
    let mut k = slot_entry_prefix(minute / DAY_SLOTS, kind, host);
    k.extend_from_slice(&minute.to_be_bytes());
    k.push(u8::from(skewed));
    k
}

fn slot_entry_prefix(day: u32, kind: u8, host: &HostId) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + 1 + 32 + 5);
    k.extend_from_slice(&day.to_be_bytes());
    k.push(kind);
    k.extend_from_slice(host.as_str().as_bytes());
    k
}

/// The slots holding lines of `kind` from `host` that may fall in
/// `[since, until)` (agent time), each once, oldest first, with whether
/// any of its lines are there by their receive time (those may have any
/// agent time, so such a slot is never skipped).
fn host_slots(
    index: &Keyspace,
    kind: u8,
    host: &HostId,
    since: i64,
    until: i64,
) -> StoreResult<Vec<(u32, bool)>> {
    let (Some(lo), Some(hi)) = (
        index.first_key_value().and_then(|g| g.key().ok()),
        index.last_key_value().and_then(|g| g.key().ok()),
    ) else {
        return Ok(Vec::new());
    };
    let (Some(lo), Some(hi)) = (leading_u32(&lo), leading_u32(&hi)) else {
        return Ok(Vec::new());
    };
    let mut slots: BTreeMap<u32, bool> = BTreeMap::new();
    for d in lo..=hi {
        let prefix = slot_entry_prefix(d, kind, host);
        for g in index.prefix(&prefix) {
            let k = g.key().map_err(unavailable)?;
            // Exactly the prefix, the minute and the flag: a longer host
            // id that begins with this one is another host.
            let Some((minute, skewed)) = k
                .strip_prefix(prefix.as_slice())
                .filter(|rest| rest.len() == 5)
                .and_then(|rest| Some((leading_u32(rest)?, rest[4] == 1)))
            else {
                continue;
            };
            let start = i64::from(minute) * SLOT_SECS;
            if skewed || (start < until && start + SLOT_SECS > since) {
                *slots.entry(minute).or_default() |= skewed;
            }
        }
    }
    Ok(slots.into_iter().collect())
}

/// The days of the keys a store before ADR 0041 wrote (first and last),
/// if it holds any still.
fn day_keys(ks: &Keyspace) -> StoreResult<Option<(u32, u32)>> {
    let end = SLOT_TAG.to_be_bytes();
    let day = |g: Option<fjall::Guard>| -> StoreResult<Option<u32>> {
        let Some(g) = g else { return Ok(None) };
        Ok(leading_u32(&g.key().map_err(unavailable)?))
    };
    let lo = day(ks.range(..end.as_slice()).next())?;
    let hi = day(ks.range(..end.as_slice()).next_back())?;
    Ok(lo.zip(hi))
}

#[async_trait]
impl LogStore for EmbeddedStore {
    async fn append_logs(&self, records: &LogRecords) -> StoreResult<()> {
        // The index entries of the slots the lines land in, each once.
        let mut entries: Vec<Vec<u8>> = Vec::new();
        let mut entry = |kind: u8, host: &HostId, unix_time: i64, received_at: i64| {
            let (minute, skewed) = slot_of(unix_time, received_at);
            let e = slot_entry(kind, host, minute, skewed);
            if !entries.contains(&e) {
                entries.push(e);
            }
        };
        // (a result line?, key, value)
        let items: Vec<(bool, Vec<u8>, Vec<u8>)> = match records {
            LogRecords::Results(rs) => rs
                .iter()
                .map(|r| {
                    entry(RESULTS, &r.host_id, r.unix_time, r.received_at);
                    Ok((true, result_key(r), enc_result(r)?))
                })
                .collect::<StoreResult<_>>()?,
            LogRecords::Status(ss) => ss
                .iter()
                .map(|s| {
                    entry(STATUS, &s.host_id, s.unix_time, s.received_at);
                    Ok((false, status_key(s), enc_status(s)?))
                })
                .collect::<StoreResult<_>>()?,
        };
        if items.is_empty() {
            return Ok(());
        }
        let inner = self.current()?;
        let r = inner
            .logs
            .writer
            .write(super::writer::LogBatch {
                lines: items,
                slots: entries,
            })
            .await;
        if let Err(StoreError::Unavailable(_)) = &r {
            // Whether the database can still write (a probe write), and
            // its reopening when not: blocking work, off the async threads.
            let store = self.clone();
            let _ = tokio::task::spawn_blocking(move || store.check_writable(&inner)).await;
        }
        r
    }

    async fn query_results(&self, f: &ResultFilter) -> StoreResult<Vec<ResultLog>> {
        if f.host_id.is_none() && f.name.is_none() {
            return Err(StoreError::Invalid(
                "a result search needs a host, a query name, or both".into(),
            ));
        }
        let f = f.clone();
        let (since, until) = f.window();
        self.run(move |i| {
            let _reading = i.logs.reading();
            let mut out: Vec<ResultLog> = Vec::new();
            let mut take = |k: &[u8], v: &[u8]| -> StoreResult<()> {
                let r = dec_line(k, v, stored_result)?;
                if r.unix_time < since || r.unix_time >= until || !f.after_cursor(&r) {
                    return Ok(());
                }
                if f.name.as_ref().is_some_and(|n| *n != r.name)
                    || f.host_id.as_ref().is_some_and(|h| *h != r.host_id)
                {
                    return Ok(());
                }
                out.push(r);
                Ok(())
            };
            match &f.host_id {
                Some(h) => {
                    // The host (and name) part of a key after its first
                    // four bytes.
                    let mut tail = h.as_str().as_bytes().to_vec();
                    if let Some(n) = &f.name {
                        tail.extend_from_slice(n.as_bytes());
                        tail.push(0);
                    }
                    let mut scan = |first: [u8; 4]| -> StoreResult<()> {
                        let mut prefix = first.to_vec();
                        prefix.extend_from_slice(&tail);
                        for g in i.logs.results.prefix(&prefix) {
                            let (k, v) = g.into_inner().map_err(unavailable)?;
                            take(&k, &v)?;
                        }
                        Ok(())
                    };
                    // Lines from skewed clocks sit in their receive day,
                    // so every stored day is visited (retention bounds how
                    // many there are).
                    if let Some((lo, hi)) = day_keys(&i.logs.results)? {
                        for day in lo..=hi {
                            scan(day.to_be_bytes())?;
                        }
                    }
                    for (minute, _) in host_slots(&i.logs.slots, RESULTS, h, since, until)? {
                        scan(slot_prefix(minute))?;
                    }
                }
                // A query's lines from every host: every stored line.
                None => {
                    for g in i.logs.results.iter() {
                        let (k, v) = g.into_inner().map_err(unavailable)?;
                        take(&k, &v)?;
                    }
                }
            }
            f.sort(&mut out);
            out.truncate(f.limit);
            Ok(out)
        })
        .await
    }

    async fn query_status(
        &self,
        host: &HostId,
        since: i64,
        until: i64,
        limit: usize,
    ) -> StoreResult<Vec<StatusLog>> {
        let host = host.clone();
        self.run(move |i| {
            let _reading = i.logs.reading();
            let mut out = Vec::new();
            let mut firsts: Vec<[u8; 4]> = Vec::new();
            if let Some((lo, hi)) = day_keys(&i.logs.status)? {
                firsts.extend((lo..=hi).map(u32::to_be_bytes));
            }
            for (minute, _) in host_slots(&i.logs.slots, STATUS, &host, since, until)? {
                firsts.push(slot_prefix(minute));
            }
            for first in firsts {
                let mut start = first.to_vec();
                start.extend_from_slice(host.as_str().as_bytes());
                let mut from = start.clone();
                from.extend_from_slice(&(since.max(0) as u64).to_be_bytes());
                let mut to = start;
                to.extend_from_slice(&(until.max(0) as u64).to_be_bytes());
                for g in i.logs.status.range(from..to) {
                    let (k, v) = g.into_inner().map_err(unavailable)?;
                    out.push(dec_line(&k, &v, stored_status)?);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn purge_logs_before_day(&self, day: u32) -> StoreResult<u64> {
        self.run(move |i| {
            let _reading = i.logs.reading();
            let mut n = 0u64;
            // Day keys (stores before ADR 0041) below `day`, then slot
            // keys below its first minute.
            let before_day = (Bound::Unbounded, Bound::Excluded(day.to_be_bytes()));
            let slot_keys = (
                Bound::Included(SLOT_TAG.to_be_bytes()),
                Bound::Excluded(slot_prefix(day.saturating_mul(DAY_SLOTS))),
            );
            for ks in [&i.logs.results, &i.logs.status] {
                for range in [before_day, slot_keys] {
                    n += i.delete_range(ks, range)?;
                }
            }
            // The index last: a slot stays listed while it holds a line.
            i.delete_range(&i.logs.slots, before_day)?;
            Ok(n)
        })
        .await
    }
}

impl Inner {
    /// Deletes the keys of `ks` in `range`, 10,000 to a durable batch, and
    /// returns how many.
    fn delete_range(
        &self,
        ks: &Keyspace,
        range: (Bound<[u8; 4]>, Bound<[u8; 4]>),
    ) -> StoreResult<u64> {
        const CHUNK: usize = 10_000;
        let mut n = 0u64;
        loop {
            let keys: Vec<_> = ks
                .range::<&[u8], _>((
                    range.0.as_ref().map(|b| b.as_slice()),
                    range.1.as_ref().map(|b| b.as_slice()),
                ))
                .take(CHUNK)
                .map(|g| g.key().map_err(unavailable))
                .collect::<StoreResult<_>>()?;
            if keys.is_empty() {
                return Ok(n);
            }
            let mut b = self.logs.db.batch();
            for k in &keys {
                b.remove(ks, k.clone());
            }
            self.write_logs(b)?;
            n += keys.len() as u64;
        }
    }
}

/// The first byte of a line stored by [`enc_line`]; a value that starts
/// with `{` is a whole record in JSON, as stores before ADR 0040 wrote it
/// (and as a line whose host id or line id does not fit the form is
/// still written).
const LINE_FORMAT: u8 = 1;

/// Where the host id sits in a log key (after the day), and its length.
const KEY_HOST: std::ops::Range<usize> = 4..36;

/// A line's value: [`LINE_FORMAT`], the receive time (ms, i64), the line
/// id's length (u16) and the id, then the line's text as the agent sent
/// it. The host is in the key; the name, agent time, kind, action, rows,
/// severity and message are derived from the text again when read. About
/// 200 bytes less per line than the whole record in JSON, through the
/// journal, every flush and every compaction.
fn enc_line(host: &HostId, line_id: &str, received_at: i64, text: &str) -> Option<Vec<u8>> {
    // The key holds the host where `stored_line` reads it back.
    if host.as_str().len() != KEY_HOST.len() || HostId::parse(host.as_str()).is_none() {
        return None;
    }
    let id_len = u16::try_from(line_id.len()).ok()?;
    let mut v = Vec::with_capacity(1 + 8 + 2 + line_id.len() + text.len());
    v.push(LINE_FORMAT);
    v.extend_from_slice(&received_at.to_be_bytes());
    v.extend_from_slice(&id_len.to_be_bytes());
    v.extend_from_slice(line_id.as_bytes());
    v.extend_from_slice(text.as_bytes());
    Some(v)
}

fn enc_result(r: &ResultLog) -> StoreResult<Vec<u8>> {
    match enc_line(&r.host_id, &r.line_id, r.received_at, r.line.json()) {
        Some(v) => Ok(v),
        None => enc(r),
    }
}

fn enc_status(s: &StatusLog) -> StoreResult<Vec<u8>> {
    match enc_line(&s.host_id, &s.line_id, s.received_at, s.line.json()) {
        Some(v) => Ok(v),
        None => enc(s),
    }
}

/// What [`enc_line`] wrote, with the host from the key `k`: `None` for a
/// value in JSON.
fn stored_line<'v>(k: &[u8], v: &'v [u8]) -> StoreResult<Option<(HostId, i64, String, &'v str)>> {
    let Some((&LINE_FORMAT, rest)) = v.split_first() else {
        return Ok(None);
    };
    let bad = |reason: &str| StoreError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        reason: reason.to_owned(),
    };
    let host = k
        .get(KEY_HOST)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(HostId::parse)
        .ok_or_else(|| bad("no host id in the key"))?;
    let (at, rest) = rest
        .split_first_chunk::<8>()
        .ok_or_else(|| bad("truncated line"))?;
    let (len, rest) = rest
        .split_first_chunk::<2>()
        .ok_or_else(|| bad("truncated line"))?;
    let len = usize::from(u16::from_be_bytes(*len));
    let (id, text) = (
        rest.get(..len).ok_or_else(|| bad("truncated line id"))?,
        rest.get(len..).unwrap_or_default(),
    );
    let id = std::str::from_utf8(id).map_err(|_| bad("line id not UTF-8"))?;
    let text = std::str::from_utf8(text).map_err(|_| bad("line text not UTF-8"))?;
    Ok(Some((host, i64::from_be_bytes(*at), id.to_owned(), text)))
}

/// A stored line read back: its stored form rebuilt by `rebuild`
/// (`gatehouse_core::logs::stored_result` or `stored_status`), or a
/// record in JSON.
fn dec_line<T: DeserializeOwned>(
    k: &[u8],
    v: &[u8],
    rebuild: fn(&HostId, String, i64, &str) -> Result<T, serde_json::Error>,
) -> StoreResult<T> {
    let Some((host, received_at, id, text)) = stored_line(k, v)? else {
        return dec(k, v);
    };
    rebuild(&host, id, received_at, text).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        reason: e.to_string(),
    })
}

/// A result line's key as stores before ADR 0041 wrote it (the day, not
/// the minute): what the tests of older stores write.
#[cfg(test)]
pub(super) fn day_result_key(r: &ResultLog) -> Vec<u8> {
    let mut k = result_key(r);
    let day = gatehouse_core::logs::bucket_day(r.unix_time, r.received_at);
    k[..4].copy_from_slice(&day.to_be_bytes());
    k
}

/// A status line's key as stores before ADR 0041 wrote it.
#[cfg(test)]
pub(super) fn day_status_key(s: &StatusLog) -> Vec<u8> {
    let mut k = status_key(s);
    let day = gatehouse_core::logs::bucket_day(s.unix_time, s.received_at);
    k[..4].copy_from_slice(&day.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(body: serde_json::Value) -> LogRecords {
        let host = HostId::from_identity("hw:stored-form");
        let m = gatehouse_core::wire::parse_object(&serde_json::to_vec(&body).unwrap()).unwrap();
        gatehouse_core::logs::records(
            &host,
            gatehouse_core::wire::parse_log(m).unwrap(),
            1_717_496_431_000,
        )
    }

    /// A line read back from its stored form is the record it was made
    /// from, every field, and shorter than the record in JSON; a value in
    /// JSON (an older store's) still reads.
    #[test]
    fn lines_read_back_whole_from_their_stored_form() {
        let LogRecords::Results(rs) = batch(serde_json::json!({"log_type": "result", "data": [
            {"name": "pack_it_procs", "unixTime": 1_717_496_430, "action": "added", "columns": {"pid": "1", "name": "init"}, "hostIdentifier": "h"},
            {"name": "snap", "unixTime": "1717496429", "action": "snapshot", "snapshot": [{"a": "1"}, {"a": "2"}]},
            {"name": "no_time", "diffResults": {"added": [{"a": "1"}], "removed": []}},
            {"name": "odd \u{1} name", "unixTime": 5, "columns": {"x": "\"quoted\""}},
        ]})) else {
            panic!("results");
        };
        for r in &rs {
            let k = result_key(r);
            let v = enc_result(r).unwrap();
            assert_eq!(v[0], LINE_FORMAT);
            assert!(
                v.len() + 150 < enc(r).unwrap().len(),
                "{} against {}",
                v.len(),
                enc(r).unwrap().len()
            );
            assert_eq!(&dec_line(&k, &v, stored_result).unwrap(), r);
            assert_eq!(&dec_line(&k, &enc(r).unwrap(), stored_result).unwrap(), r);
        }
        let LogRecords::Status(ss) = batch(serde_json::json!({"log_type": "status", "data": [
            {"severity": "1", "unixTime": 1_717_496_430, "message": "watcher restarted", "filename": "w.cpp", "line": 9},
            {"message": "no time, no severity"},
        ]})) else {
            panic!("status");
        };
        for s in &ss {
            let k = status_key(s);
            let v = enc_status(s).unwrap();
            assert_eq!(&dec_line(&k, &v, stored_status).unwrap(), s);
            assert_eq!(&dec_line(&k, &enc(s).unwrap(), stored_status).unwrap(), s);
        }
        // A damaged value is named, not mistaken for another line.
        let k = result_key(&rs[0]);
        let v = enc_result(&rs[0]).unwrap();
        assert!(matches!(
            dec_line(&k, &v[..5], stored_result),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            dec_line(&k[..10], &v, stored_result),
            Err(StoreError::Corrupt { .. })
        ));
    }

    fn post(host: &HostId, received_ms: i64, body: serde_json::Value) -> LogRecords {
        let m = gatehouse_core::wire::parse_object(&serde_json::to_vec(&body).unwrap()).unwrap();
        gatehouse_core::logs::records(
            host,
            gatehouse_core::wire::parse_log(m).unwrap(),
            received_ms,
        )
    }

    fn results_at(host: &HostId, received_ms: i64, lines: &[(&str, i64)]) -> Vec<ResultLog> {
        let data: Vec<_> = lines
            .iter()
            .enumerate()
            .map(|(n, (name, at))| serde_json::json!({"name": name, "unixTime": at, "action": "added", "columns": {"n": n.to_string()}}))
            .collect();
        let LogRecords::Results(rs) = post(
            host,
            received_ms,
            serde_json::json!({"log_type": "result", "data": data}),
        ) else {
            panic!("results");
        };
        rs
    }

    /// Lines land in the minute slot of their agent time (their receive
    /// minute when the agent's clock is off), the index lists each host's
    /// slots, and searches by host find every line through it, in a window
    /// too, and a skewed line by its agent time; lines keyed by day (a
    /// store before ADR 0041) still read; retention drops lines and index
    /// entries of the days before, of both layouts.
    #[tokio::test]
    async fn lines_in_minute_slots_are_found_through_the_slot_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let (a, b) = (
            HostId::from_identity("hw:slot-a"),
            HostId::from_identity("hw:slot-b"),
        );
        let now = 1_717_496_431i64;
        let times = [
            ("procs", now - 3 * 86_400),
            ("procs", now - 7_200),
            ("users", now - 7_190),
            ("procs", now - 90),
            ("procs", now - 30),
            ("users", now),
            // A clock years off: stored in the receive minute.
            ("procs", 5),
        ];
        let (ra, rb) = (
            results_at(&a, now * 1000, &times),
            results_at(&b, now * 1000, &times),
        );
        store
            .append_logs(&LogRecords::Results(ra.clone()))
            .await
            .unwrap();
        store
            .append_logs(&LogRecords::Results(rb.clone()))
            .await
            .unwrap();
        // Re-sent: stored once, listed once.
        store
            .append_logs(&LogRecords::Results(ra.clone()))
            .await
            .unwrap();
        let LogRecords::Status(sa) = post(
            &a,
            now * 1000,
            serde_json::json!({"log_type": "status", "data": [
                {"severity": 0, "unixTime": now - 7_200, "message": "old", "filename": "x.cpp", "line": 1},
                {"severity": 1, "unixTime": now - 10, "message": "new", "filename": "x.cpp", "line": 2},
            ]}),
        ) else {
            panic!("status");
        };
        store
            .append_logs(&LogRecords::Status(sa.clone()))
            .await
            .unwrap();
        // A line of a store before ADR 0041, keyed by its day.
        let old = results_at(&a, (now - 86_400) * 1000, &[("legacy", now - 86_400)]).remove(0);
        let inner = store.current().unwrap();
        inner
            .logs
            .results
            .insert(day_result_key(&old), enc_result(&old).unwrap())
            .unwrap();

        // Slots: the distinct minutes of a's result lines, the skewed
        // line's receive minute flagged.
        let listed = host_slots(&inner.logs.slots, RESULTS, &a, i64::MIN, i64::MAX).unwrap();
        let mut want: BTreeMap<u32, bool> = BTreeMap::new();
        for (_, at) in times {
            let (minute, skewed) = slot_of(at, now * 1000);
            *want.entry(minute).or_default() |= skewed;
        }
        assert_eq!(listed, want.into_iter().collect::<Vec<_>>());
        assert!(listed.contains(&((now / 60) as u32, true)));
        assert_eq!(inner.logs.results.iter().count(), 2 * times.len() + 1);

        let search = |host: Option<&HostId>, name: Option<&str>, since: i64, until: i64| {
            let f = ResultFilter {
                host_id: host.cloned(),
                name: name.map(str::to_owned),
                since,
                until,
                limit: 1_000,
                ..ResultFilter::default()
            };
            let store = store.clone();
            async move { store.query_results(&f).await.unwrap() }
        };
        let mut everything = ra.clone();
        everything.push(old.clone());
        let f = ResultFilter::default();
        f.sort(&mut everything);
        assert_eq!(search(Some(&a), None, 0, i64::MAX).await, everything);
        let procs: Vec<_> = everything
            .iter()
            .filter(|r| r.name == "procs")
            .cloned()
            .collect();
        assert_eq!(search(Some(&a), Some("procs"), 0, i64::MAX).await, procs);
        let last_two_minutes: Vec<_> = everything
            .iter()
            .filter(|r| r.unix_time >= now - 100)
            .cloned()
            .collect();
        assert_eq!(last_two_minutes.len(), 3);
        assert_eq!(
            search(Some(&a), None, now - 100, now + 1).await,
            last_two_minutes
        );
        // The skewed line, by its agent time, though its slot is now.
        let skewed = search(Some(&a), None, 0, 10).await;
        assert_eq!(skewed.len(), 1);
        assert_eq!(skewed[0].unix_time, 5);
        // By name alone, every host's.
        assert_eq!(search(None, Some("users"), 0, i64::MAX).await.len(), 4);

        let status = store.query_status(&a, 0, i64::MAX, 10).await.unwrap();
        assert_eq!(status, sa);
        let recent = store
            .query_status(&a, now - 60, i64::MAX, 10)
            .await
            .unwrap();
        assert_eq!(recent, sa[1..].to_vec());
        assert!(
            store
                .query_status(&b, 0, i64::MAX, 10)
                .await
                .unwrap()
                .is_empty()
        );

        // Retention: the days before yesterday go, the legacy line of
        // yesterday stays; then yesterday goes too.
        let today = gatehouse_core::time::unix_day(now);
        let dropped = store.purge_logs_before_day(today - 1).await.unwrap();
        assert_eq!(dropped, 2, "the line of three days ago, of each host");
        assert!(
            host_slots(&inner.logs.slots, RESULTS, &a, i64::MIN, i64::MAX)
                .unwrap()
                .iter()
                .all(|(m, _)| *m / DAY_SLOTS >= today - 1)
        );
        assert_eq!(
            search(Some(&a), None, 0, i64::MAX).await.len(),
            everything.len() - 1
        );
        assert_eq!(store.purge_logs_before_day(today).await.unwrap(), 1);
        assert_eq!(
            search(Some(&a), Some("legacy"), 0, i64::MAX).await,
            Vec::new()
        );
        assert_eq!(
            search(Some(&a), None, 0, i64::MAX).await.len(),
            times.len() - 1
        );
        assert_eq!(store.query_status(&a, 0, i64::MAX, 10).await.unwrap(), sa);
    }
}
