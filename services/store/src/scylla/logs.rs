//! The ScyllaDB adapter's result and status logs (partitions per host and
//! day, expiry by table TTL).

use gatehouse_core::ports::LogStore;

use super::*;

#[async_trait]
impl LogStore for ScyllaStore {
    async fn append_logs(&self, records: &LogRecords) -> StoreResult<()> {
        match records {
            LogRecords::Results(rs) => self.append_results(rs).await,
            LogRecords::Status(ss) => self.append_status(ss).await,
        }
    }

    async fn query_results(&self, f: &ResultFilter) -> StoreResult<Vec<ResultLog>> {
        let i = &self.inner;
        // The cursor narrows the days read; rows are cut to it in memory
        // (the partition read keeps the caller's window only).
        let (since, until) = f.window();
        let w = statements::window(f.since, f.until);
        let limit = f.limit;
        let newest = f.order == LogOrder::NewestFirst;
        // A partition's first `limit` lines (ascending) are the ones
        // wanted only oldest first and without a cursor; otherwise the
        // partition's whole window is read (one host's query on one day).
        let per_part = if newest || f.after.is_some() {
            usize::MAX
        } else {
            limit
        };
        match (&f.host_id, &f.name) {
            (None, None) => Err(StoreError::Invalid(
                "a result search needs a host, a query name, or both".into(),
            )),
            (Some(host), name) => {
                let index: Vec<(i32, String, Option<bool>)> =
                    i.rows(Q::ResultIndex, (host.as_str(),), usize::MAX).await?;
                let parts = index
                    .into_iter()
                    .filter(|(_, n, _)| name.as_ref().is_none_or(|want| want == n))
                    .map(|(day, n, skewed)| Part {
                        unit: i64::from(day),
                        key: (day, n),
                        skewed: skewed.unwrap_or(false),
                    })
                    .collect();
                let mut groups = plan(parts, DAY_SECS, since, until);
                let order = if newest {
                    // Skewed lines (any time) first, then the days newest
                    // first.
                    let first_dated =
                        usize::from(groups.first().is_some_and(|g| g.start == i64::MIN));
                    groups[first_dated..].reverse();
                    Gathered::Descending(result_order_desc, DAY_SECS)
                } else {
                    Gathered::Ascending(result_order)
                };
                i.gather(
                    groups,
                    limit,
                    |p: Part<(i32, String)>| async move {
                        let (q, v) = statements::results_of_host(host, p.key.0, &p.key.1, w);
                        let mut lines = i.docs::<ResultLog>(q, v, per_part).await?;
                        lines.retain(|r| {
                            r.unix_time >= since && r.unix_time < until && f.after_cursor(r)
                        });
                        Ok(lines)
                    },
                    |r| r.unix_time,
                    order,
                )
                .await
            }
            (None, Some(_)) => Err(StoreError::Invalid(
                "a fleet-wide result search (a query name without a host) is not served by the \
                 ScyllaDB store: results are kept per host; give a host_id, or read the fleet's \
                 results from your log destination"
                    .into(),
            )),
        }
    }

    async fn query_status(
        &self,
        host: &HostId,
        since: i64,
        until: i64,
        limit: usize,
    ) -> StoreResult<Vec<StatusLog>> {
        let i = &self.inner;
        let w = statements::window(since, until);
        let index: Vec<(i32, Option<bool>)> =
            i.rows(Q::StatusIndex, (host.as_str(),), usize::MAX).await?;
        let parts = index
            .into_iter()
            .map(|(day, skewed)| Part {
                unit: i64::from(day),
                key: day,
                skewed: skewed.unwrap_or(false),
            })
            .collect();
        let groups = plan(parts, DAY_SECS, since, until);
        i.gather(
            groups,
            limit,
            |p: Part<i32>| async move {
                let (q, v) = statements::status_of_host(host, p.key, w);
                i.docs::<StatusLog>(q, v, limit).await
            },
            |s| s.unix_time,
            Gathered::Ascending(status_order),
        )
        .await
    }

    async fn purge_logs_before_day(&self, _day: u32) -> StoreResult<u64> {
        // Log tables expire rows by their default TTL.
        Ok(0)
    }

    fn expires_by_ttl(&self) -> bool {
        true
    }
}
