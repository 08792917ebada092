//! The embedded store's result and status logs: day-bucketed keys, writes
//! idempotent on the line id, purge by day.

use gatehouse_core::ports::LogStore;

use super::*;

#[async_trait]
impl LogStore for EmbeddedStore {
    async fn append_logs(&self, records: &LogRecords) -> StoreResult<()> {
        let items: Vec<(bool, Vec<u8>, Vec<u8>)> = match records {
            LogRecords::Results(rs) => rs
                .iter()
                .map(|r| Ok((true, result_key(r), enc(r)?)))
                .collect::<StoreResult<_>>()?,
            LogRecords::Status(ss) => ss
                .iter()
                .map(|s| Ok((false, status_key(s), enc(s)?)))
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
                    let r: ResultLog = dec(&k, &v)?;
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
                    out.push(dec::<StatusLog>(&k, &v)?);
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
