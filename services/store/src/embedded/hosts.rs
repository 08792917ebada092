//! The embedded store's hosts: records, last-seen times (the `seen`
//! keyspace, so the frequent write does not rewrite the record; a read
//! takes the later of the two) and label memberships.

use gatehouse_core::ports::HostStore;

use super::*;

#[async_trait]
impl HostStore for EmbeddedStore {
    async fn get_host(&self, id: &HostId) -> StoreResult<Option<Host>> {
        let id = id.clone();
        self.run(move |i| {
            let k = id.as_str().as_bytes();
            i.get_json::<Host>(&i.hosts, k)?
                .map(|h| with_seen(i, h))
                .transpose()
        })
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
            let mut b = i.db.batch();
            b.remove(&i.seen, k.clone());
            b.remove(&i.hosts, k);
            if let Some((k, f)) = f {
                b.insert(&i.fences, k, f);
            }
            i.write(b)?;
            Ok(true)
        })
        .await
    }

    async fn touch_host(&self, id: &HostId, last_seen: i64, fence: Fence) -> StoreResult<()> {
        // Eight bytes in `seen`: the record (details, labels) is not
        // decoded or rewritten.
        let id = id.clone();
        self.run(move |i| {
            let _g = i.host_lock(&id)?;
            let k = id.as_str().as_bytes().to_vec();
            if !i.hosts.contains_key(&k).map_err(unavailable)? {
                return Ok(());
            }
            let f = i.fenced(&id, fence)?;
            if seen_at(i, &k)?.is_some_and(|t| t >= last_seen) {
                return Ok(());
            }
            let mut items = vec![(&i.seen, k, last_seen.to_be_bytes().to_vec())];
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
                items.push(with_seen(i, dec::<Host>(&k, &v)?)?);
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
        // The all-in-one's fleet fits a scan (the cluster store keeps an
        // index): every member, in id order.
        self.hosts_with_label_after(label, None, usize::MAX).await
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

/// The host's last check-in written by `touch_host`, if any.
fn seen_at(i: &Inner, key: &[u8]) -> StoreResult<Option<i64>> {
    match i.seen.get(key).map_err(unavailable)? {
        Some(v) => Ok(Some(i64::from_be_bytes(v.as_ref().try_into().map_err(
            |_| StoreError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                reason: "last-seen time is not 8 bytes".into(),
            },
        )?))),
        None => Ok(None),
    }
}

/// `h` with the later of its record's and its touched last-seen time.
fn with_seen(i: &Inner, mut h: Host) -> StoreResult<Host> {
    if let Some(t) = seen_at(i, h.id.as_str().as_bytes())? {
        h.last_seen = h.last_seen.max(t);
    }
    Ok(h)
}
