//! The embedded store's hosts: records, last-seen times (the `seen`
//! keyspace, so the frequent write does not rewrite the record; a read
//! takes the later of the two), the name index (`names`: each hostname
//! and host identifier to its hosts, kept in the record's batch) and label
//! memberships.

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
        let names = host.names();
        self.run(move |i| {
            let _g = i.host_lock(&id)?;
            let k = id.as_str().as_bytes().to_vec();
            let f = i.fenced(&id, fence)?;
            let before = names_in_record(i, &k)?;
            let mut b = i.db.batch();
            for n in before.iter().filter(|n| !names.contains(n)) {
                b.remove(&i.names, name_key(n, id.as_str()));
            }
            for n in &names {
                b.insert(&i.names, name_key(n, id.as_str()), Vec::new());
            }
            b.insert(&i.hosts, k, v);
            if let Some((k, f)) = f {
                b.insert(&i.fences, k, f);
            }
            i.write(b)
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
            for n in names_in_record(i, &k)? {
                b.remove(&i.names, name_key(&n, id.as_str()));
            }
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
            let seen = (&i.seen, k, last_seen.to_be_bytes().to_vec());
            match f {
                // A fence not yet stored is what keeps an older owner out:
                // durable before the write returns.
                Some((k, f)) => i.commit(vec![seen, (&i.fences, k, f)]),
                // Only the time: best effort (a crash of the machine, not
                // of the process, may take back the last few seconds),
                // so not worth a wait for the journal's sync.
                None => i.commit_unsynced(vec![seen]),
            }
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
            if label == "all" {
                // Every host is in `all`: its id is the record's key, so
                // no record is read or decoded (a campaign to the whole
                // fleet resolves its targets from the keys alone).
                for g in iter.take(limit) {
                    let k = g.key().map_err(unavailable)?;
                    let id = std::str::from_utf8(&k)
                        .ok()
                        .and_then(HostId::parse)
                        .ok_or_else(|| StoreError::Corrupt {
                            key: String::from_utf8_lossy(&k).into_owned(),
                            reason: "host record key is not a host id".into(),
                        })?;
                    out.push(id);
                }
                return Ok(out);
            }
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
        let name = name.trim().to_lowercase();
        self.run(move |i| {
            let prefix = name_key(&name, "");
            let mut out = Vec::new();
            for g in i.names.prefix(&prefix) {
                let k = g.key().map_err(unavailable)?;
                let Some(id) = std::str::from_utf8(&k[prefix.len()..])
                    .ok()
                    .and_then(HostId::parse)
                else {
                    continue;
                };
                // The record decides: an entry it no longer backs is ignored.
                if names_in_record(i, id.as_str().as_bytes())?.contains(&name) {
                    out.push(id);
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

/// The `names` key of `name` for host `id` (`id` empty: the prefix of
/// every host with that name).
fn name_key(name: &str, id: &str) -> Vec<u8> {
    join(&[name.as_bytes(), id.as_bytes()])
}

/// The hostname and host identifier of a stored record, nothing else
/// decoded.
#[derive(serde::Deserialize)]
struct Named {
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    host_identifier: String,
}

/// The names the stored record of host key `k` is addressed by (none when
/// there is no record, or one that does not decode: a write replacing it
/// must not fail for it).
fn names_in_record(i: &Inner, k: &[u8]) -> StoreResult<Vec<String>> {
    Ok(match i.hosts.get(k).map_err(unavailable)? {
        Some(v) => match dec::<Named>(k, &v) {
            Ok(n) => gatehouse_core::model::host_names(&n.hostname, &n.host_identifier),
            Err(e) => {
                tracing::warn!(error = %e, "host record unreadable: its names are not indexed");
                Vec::new()
            }
        },
        None => Vec::new(),
    })
}

/// Meta key set once `names` holds every host's names.
pub(super) const NAMES_INDEXED: &[u8] = b"\0indexed:names";

/// Fills the name index from the host records once (stores written before
/// it existed); later writes keep it in step.
pub(super) fn index_names(i: &Inner) -> StoreResult<()> {
    if i.meta.contains_key(NAMES_INDEXED).map_err(unavailable)? {
        return Ok(());
    }
    let mut b = i.db.batch();
    let mut hosts = 0u64;
    for g in i.hosts.iter() {
        let (k, v) = g.into_inner().map_err(unavailable)?;
        let (Ok(n), Some(id)) = (
            dec::<Named>(&k, &v),
            std::str::from_utf8(&k).ok().and_then(HostId::parse),
        ) else {
            tracing::warn!(key = %String::from_utf8_lossy(&k), "host record unreadable: not indexed by name");
            continue;
        };
        for name in gatehouse_core::model::host_names(&n.hostname, &n.host_identifier) {
            b.insert(&i.names, name_key(&name, id.as_str()), Vec::new());
        }
        hosts += 1;
    }
    b.insert(&i.meta, NAMES_INDEXED.to_vec(), vec![1]);
    i.write_durably(b)?;
    if hosts > 0 {
        tracing::info!(hosts, "host names indexed");
    }
    Ok(())
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
