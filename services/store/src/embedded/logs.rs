//! The embedded store's result and status logs: day-bucketed keys, writes
//! idempotent on the line id, purge by day; each line stored as its text
//! and the little its key and text do not say (ADR 0040).

use gatehouse_core::logs::{stored_result, stored_status};
use gatehouse_core::ports::LogStore;

use super::*;

#[async_trait]
impl LogStore for EmbeddedStore {
    async fn append_logs(&self, records: &LogRecords) -> StoreResult<()> {
        let items: Vec<(bool, Vec<u8>, Vec<u8>)> = match records {
            LogRecords::Results(rs) => rs
                .iter()
                .map(|r| Ok((true, result_key(r), enc_result(r)?)))
                .collect::<StoreResult<_>>()?,
            LogRecords::Status(ss) => ss
                .iter()
                .map(|s| Ok((false, status_key(s), enc_status(s)?)))
                .collect::<StoreResult<_>>()?,
        };
        if items.is_empty() {
            return Ok(());
        }
        // Held by the blocking call itself: a caller that goes away (the
        // agent's request timed out) leaves its write running and its slot
        // taken until the write ends.
        let writer = self
            .shared
            .log_writers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| unavailable("the store is closing"))?;
        self.run(move |i| {
            let _writer = writer;
            i.room_for_logs()?;
            let mut b = i.logs.db.batch();
            for (res, k, v) in items {
                b.insert(if res { &i.logs.results } else { &i.logs.status }, k, v);
            }
            i.write_logs(b)
        })
        .await
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
            let Some((lo, hi)) = first_day(&i.logs.results) else {
                return Ok(Vec::new());
            };
            // Lines from skewed clocks sit in their receive day, so every
            // stored day is visited (retention bounds how many there are).
            let mut out: Vec<ResultLog> = Vec::new();
            for day in lo..=hi {
                let mut prefix = day.to_be_bytes().to_vec();
                if let Some(h) = &f.host_id {
                    prefix.extend_from_slice(h.as_str().as_bytes());
                    if let Some(n) = &f.name {
                        prefix.extend_from_slice(n.as_bytes());
                        prefix.push(0);
                    }
                }
                for g in i.logs.results.prefix(&prefix) {
                    let (k, v) = g.into_inner().map_err(unavailable)?;
                    let r = dec_line(&k, &v, stored_result)?;
                    if r.unix_time < since || r.unix_time >= until || !f.after_cursor(&r) {
                        continue;
                    }
                    if f.name.as_ref().is_some_and(|n| *n != r.name) {
                        continue;
                    }
                    out.push(r);
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
            let Some((lo, hi)) = first_day(&i.logs.status) else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for day in lo..=hi {
                let mut start = day.to_be_bytes().to_vec();
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
            let mut n = 0u64;
            for ks in [&i.logs.results, &i.logs.status] {
                let end = day.to_be_bytes();
                let keys: Vec<_> = ks
                    .range(..end.as_slice())
                    .map(|g| g.key().map_err(unavailable))
                    .collect::<StoreResult<_>>()?;
                for chunk in keys.chunks(10_000) {
                    let mut b = i.logs.db.batch();
                    for k in chunk {
                        b.remove(ks, k.clone());
                    }
                    i.write_logs(b)?;
                    n += chunk.len() as u64;
                }
            }
            Ok(n)
        })
        .await
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
}
