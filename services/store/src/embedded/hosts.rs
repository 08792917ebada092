//! The embedded store's hosts: records, last-seen times (a separate
//! keyspace, so the frequent write does not rewrite the record) and label
//! memberships.

use gatehouse_core::ports::HostStore;

use super::*;

#[async_trait]
impl HostStore for EmbeddedStore {
    async fn get_host(&self, id: &HostId) -> StoreResult<Option<Host>> {
        let id = id.clone();
        self.run(move |i| i.get_json(&i.hosts, id.as_str().as_bytes()))
            .await
    }

    async fn put_host(&self, host: &Host, fence: Fence) -> StoreResult<()> {
        let v = enc(host)?;
        let id = host.id.clone();
        self.run(move |i| {
            let _g = i.host_lock(&id)?;
            let mut items = vec![(&i.hosts, id.as_str().as_bytes().to_vec(), v)];
            if let Some((k, f)) = i.fenced(&id, fence)? {
                items.push((&i.fences, k, f));
            }
            i.commit(items)
        })
        .await
    }

    async fn delete_host(&self, id: &HostId, fence: Fence) -> StoreResult<bool> {
        let id = id.clone();
        self.run(move |i| {
            let _g = i.host_lock(&id)?;
            let k = id.as_str().as_bytes().to_vec();
            if i.hosts.get(&k).map_err(unavailable)?.is_none() {
                return Ok(false);
            }
            let f = i.fenced(&id, fence)?;
            let mut b = i.db.batch().durability(Some(PersistMode::SyncData));
            b.remove(&i.hosts, k);
            if let Some((k, f)) = f {
                b.insert(&i.fences, k, f);
            }
            b.commit().map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn touch_host(&self, id: &HostId, last_seen: i64, fence: Fence) -> StoreResult<()> {
        let id = id.clone();
        self.run(move |i| {
            let _g = i.host_lock(&id)?;
            let k = id.as_str().as_bytes().to_vec();
            let Some(mut h) = i.get_json::<Host>(&i.hosts, &k)? else {
                return Ok(());
            };
            let f = i.fenced(&id, fence)?;
            if h.last_seen >= last_seen {
                return Ok(());
            }
            h.last_seen = last_seen;
            let mut items = vec![(&i.hosts, k, enc(&h)?)];
            if let Some((k, f)) = f {
                items.push((&i.fences, k, f));
            }
            i.commit(items)
        })
        .await
    }

    async fn list_hosts(&self, cursor: Option<&str>, limit: usize) -> StoreResult<Page<Host>> {
        // The cursor is the last host id of the previous page.
        let after = match cursor {
            Some(c) => Some(
                HostId::parse(c)
                    .ok_or_else(|| StoreError::Invalid(format!("invalid host cursor {c:?}")))?
                    .as_str()
                    .as_bytes()
                    .to_vec(),
            ),
            None => None,
        };
        self.run(move |i| {
            let iter = hosts_after(i, after.as_deref());
            let mut items = Vec::new();
            let mut more = false;
            for g in iter {
                let (k, v) = g.into_inner().map_err(unavailable)?;
                if items.len() == limit {
                    more = true;
                    break;
                }
                items.push(dec::<Host>(&k, &v)?);
            }
            let next = if more {
                items.last().map(|h| h.id.to_string())
            } else {
                None
            };
            Ok(Page { items, next })
        })
        .await
    }

    async fn hosts_with_label(&self, label: &str) -> StoreResult<Vec<HostId>> {
        // The all-in-one's fleet fits a scan; the cluster store keeps an
        // index.
        let label = label.to_owned();
        self.run(move |i| {
            let mut out = Vec::new();
            for g in i.hosts.iter() {
                let (k, v) = g.into_inner().map_err(unavailable)?;
                let h: Host = dec(&k, &v)?;
                if h.label_set().contains(&label) {
                    out.push(h.id);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn hosts_with_label_after(
        &self,
        label: &str,
        after: Option<&HostId>,
        limit: usize,
    ) -> StoreResult<Vec<HostId>> {
        // Host records are kept in id order: read on from `after` and stop
        // at `limit` members (a common label costs a few pages of hosts).
        let label = label.to_owned();
        let after = after.map(|a| a.as_str().as_bytes().to_vec());
        self.run(move |i| {
            let iter = hosts_after(i, after.as_deref());
            let mut out = Vec::new();
            for g in iter {
                if out.len() == limit {
                    break;
                }
                let (k, v) = g.into_inner().map_err(unavailable)?;
                let h: Host = dec(&k, &v)?;
                if h.label_set().contains(&label) {
                    out.push(h.id);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn hosts_named(&self, name: &str) -> StoreResult<Vec<HostId>> {
        // A scan, as for labels: the all-in-one's fleet fits one.
        let name = name.trim().to_lowercase();
        self.run(move |i| {
            let mut out = Vec::new();
            for g in i.hosts.iter() {
                let (k, v) = g.into_inner().map_err(unavailable)?;
                let h: Host = dec(&k, &v)?;
                if h.names().contains(&name) {
                    out.push(h.id);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn label_sets(&self) -> StoreResult<Vec<Vec<String>>> {
        self.run(|i| {
            let mut sets = std::collections::BTreeSet::new();
            for g in i.hosts.iter() {
                let (k, v) = g.into_inner().map_err(unavailable)?;
                sets.insert(dec::<Host>(&k, &v)?.label_set());
            }
            Ok(sets.into_iter().collect())
        })
        .await
    }
}

/// Host records in id order, strictly after the id `after` (all when
/// none).
fn hosts_after(i: &Inner, after: Option<&[u8]>) -> fjall::Iter {
    match after {
        Some(a) => i
            .hosts
            .range::<&[u8], _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
        None => i.hosts.iter(),
    }
}
