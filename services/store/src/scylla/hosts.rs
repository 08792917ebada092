//! The ScyllaDB adapter's hosts: records, last-seen column writes, label
//! memberships in bucketed partitions and the label-set cache.

use gatehouse_core::ports::HostStore;

use super::*;

#[async_trait]
impl HostStore for ScyllaStore {
    async fn get_host(&self, id: &HostId) -> StoreResult<Option<Host>> {
        let row = self
            .inner
            .one::<HostRowRead>(Q::GetHost, (id.as_str(),))
            .await?;
        match row.map(host_from_row).transpose()?.flatten() {
            Some(h) => {
                self.remember_labels(&h)?;
                Ok(Some(h))
            }
            None => Ok(None),
        }
    }

    async fn delete_host(&self, id: &HostId, fence: Fence) -> StoreResult<bool> {
        let i = &self.inner;
        let Some(host) = self.get_host(id).await? else {
            return Ok(false);
        };
        // Memberships first: an index row never points at a missing host
        // for long, and a retry after a failure finds the record to finish.
        let bucket = bucket_of(id, LABEL_BUCKETS);
        for l in host.label_set() {
            i.exec_fenced(
                Q::DeleteLabelMember,
                (l.as_str(), bucket, id.as_str()),
                fence,
            )
            .await?;
        }
        for n in host.names() {
            i.exec_fenced(Q::DeleteHostName, (n.as_str(), id.as_str()), fence)
                .await?;
        }
        i.exec_fenced(Q::DeleteHost, (id.as_str(),), fence).await?;
        if let Ok(mut cache) = i.host_labels.lock() {
            cache.remove(id);
        }
        Ok(true)
    }

    async fn put_host(&self, host: &Host, fence: Fence) -> StoreResult<()> {
        let i = &self.inner;
        let now = Indexed::of(host);
        let labels = now.labels.clone();
        let cached = i
            .host_labels
            .lock()
            .map_err(|_| unavailable("label cache poisoned"))?
            .get(&host.id)
            .cloned();
        let was = match cached {
            Some(l) => Some(l),
            None => self.get_host(&host.id).await?.map(|h| Indexed::of(&h)),
        };
        let before = was.as_ref().map(|w| w.labels.clone());
        let names_before = was.map(|w| w.names).unwrap_or_default();
        // The record first; membership follows (an index row may briefly
        // lag the record, never point at a host that does not exist).
        i.exec_fenced(
            Q::PutHost,
            (host.id.as_str(), enc(host)?, host.last_seen),
            fence,
        )
        .await?;
        if before.as_ref() != Some(&labels) {
            let before = before.unwrap_or_default();
            let bucket = bucket_of(&host.id, LABEL_BUCKETS);
            for l in labels.iter().filter(|l| !before.contains(l)) {
                i.exec_fenced(
                    Q::PutLabelMember,
                    (l.as_str(), bucket, host.id.as_str()),
                    fence,
                )
                .await?;
            }
            for l in before.iter().filter(|l| !labels.contains(l)) {
                i.exec_fenced(
                    Q::DeleteLabelMember,
                    (l.as_str(), bucket, host.id.as_str()),
                    fence,
                )
                .await?;
            }
            let key = labels.join("\n");
            i.index_once(
                (key.clone(), 0, 0, false),
                Q::PutLabelSet,
                ("all", key.as_str()),
            )
            .await?;
        }
        for n in now.names.iter().filter(|n| !names_before.contains(n)) {
            i.exec_fenced(Q::PutHostName, (n.as_str(), host.id.as_str()), fence)
                .await?;
        }
        for n in names_before.iter().filter(|n| !now.names.contains(n)) {
            i.exec_fenced(Q::DeleteHostName, (n.as_str(), host.id.as_str()), fence)
                .await?;
        }
        self.remember_labels(host)
    }

    async fn hosts_named(&self, name: &str) -> StoreResult<Vec<HostId>> {
        let name = name.trim().to_lowercase();
        let rows: Vec<(String,)> = self
            .inner
            .rows(Q::HostsNamed, (name.as_str(),), usize::MAX)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id,)| HostId::parse(&id))
            .collect())
    }

    async fn touch_host(&self, id: &HostId, last_seen: i64, fence: Fence) -> StoreResult<()> {
        // A column write: the record (details, labels) is not rewritten.
        self.inner
            .exec_fenced(Q::TouchHost, (last_seen, id.as_str()), fence)
            .await
    }

    async fn list_hosts(&self, cursor: Option<&str>, limit: usize) -> StoreResult<Page<Host>> {
        let i = &self.inner;
        let state = match cursor {
            Some(c) => PagingState::new_from_raw_bytes(
                cursor_decode(c)
                    .ok_or_else(|| StoreError::Invalid(format!("invalid host cursor {c:?}")))?,
            ),
            None => PagingState::start(),
        };
        let mut st = i.st(Q::ListHosts).clone();
        st.set_page_size(i32::try_from(limit.clamp(1, 10_000)).unwrap_or(PAGE_ROWS));
        let (res, paging) = i
            .timed(Q::ListHosts, async {
                let _p = i.permit().await?;
                i.session
                    .execute_single_page(&st, (), state)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        let items = res
            .into_rows_result()
            .map_err(unavailable)?
            .rows::<HostRowRead>()
            .map_err(unavailable)?
            .map(|r| host_from_row(r.map_err(unavailable)?))
            .filter_map(Result::transpose)
            .collect::<StoreResult<Vec<_>>>()?;
        let next = match paging {
            PagingStateResponse::HasMorePages { state } => {
                state.as_bytes_slice().map(|b| cursor_encode(b))
            }
            PagingStateResponse::NoMorePages => None,
        };
        Ok(Page { items, next })
    }

    async fn hosts_with_label(&self, label: &str) -> StoreResult<Vec<HostId>> {
        let i = &self.inner;
        let parts: Vec<Vec<(String,)>> = stream::iter(0..i32::try_from(LABEL_BUCKETS).unwrap_or(1))
            .map(|b| i.rows::<(String,)>(Q::LabelMembers, (label, b), usize::MAX))
            .buffered(i.fan_out)
            .try_collect()
            .await?;
        parts
            .into_iter()
            .flatten()
            .map(|(id,)| {
                HostId::parse(&id).ok_or_else(|| StoreError::Corrupt {
                    key: format!("hosts_by_label/{label}"),
                    reason: format!("invalid host id {id:?}"),
                })
            })
            .collect()
    }

    async fn label_sets(&self) -> StoreResult<Vec<Vec<String>>> {
        let rows: Vec<(String,)> = self.inner.rows(Q::LabelSets, ("all",), usize::MAX).await?;
        Ok(rows
            .into_iter()
            .map(|(k,)| k.split('\n').map(str::to_owned).collect())
            .collect())
    }
}
