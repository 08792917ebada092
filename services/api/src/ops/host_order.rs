//! The hosts list sorted by hostname or by last check-in: an in-memory
//! order of host ids, made by one pass over the host records and made
//! again when it is as old as the fleet summary may be (5 s below 10,000
//! hosts, 60 s above). A sorted page reads only its own hosts (one point
//! read each, with their current values); the order itself is as of the
//! last pass, which the answer's `sorted_at` says.

use std::sync::Arc;

use gatehouse_core::HostId;
use gatehouse_core::model::Host;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::fleet::max_age;
use crate::ApiError;
use crate::admin::Admin;

/// What a hosts page is sorted by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostSort {
    /// Host id: the store's own order, always current.
    #[default]
    Id,
    /// Hostname, A to Z (case-insensitive).
    Hostname,
    /// Last check-in, most recent first.
    LastSeen,
}

/// The orders kept in memory ([`HostOrder`]); sorting by id needs none
/// (the store lists in id order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sorted {
    Hostname,
    LastSeen,
}

impl HostSort {
    /// The in-memory order this sort reads, if any.
    pub(crate) fn in_memory(self) -> Option<Sorted> {
        match self {
            HostSort::Id => None,
            HostSort::Hostname => Some(Sorted::Hostname),
            HostSort::LastSeen => Some(Sorted::LastSeen),
        }
    }
}

/// A sort key: the hostname (lowercased) or the negated last-seen time,
/// then the host id, so every key is unique and ascending.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key {
    Name(String, HostId),
    Seen(i64, HostId),
}

impl Key {
    fn of(sort: Sorted, h: &Host) -> Key {
        match sort {
            Sorted::Hostname => Key::Name(h.hostname.to_lowercase(), h.id.clone()),
            Sorted::LastSeen => Key::Seen(-h.last_seen, h.id.clone()),
        }
    }

    pub(crate) fn host(&self) -> &HostId {
        match self {
            Key::Name(_, id) | Key::Seen(_, id) => id,
        }
    }

    /// The page cursor after this key: `n:<host id>:<hostname>` or
    /// `t:<host id>:<negated ms>`.
    pub(crate) fn cursor(&self) -> String {
        match self {
            Key::Name(n, id) => format!("n:{id}:{n}"),
            Key::Seen(t, id) => format!("t:{id}:{t}"),
        }
    }

    pub(crate) fn parse(sort: Sorted, s: &str) -> Option<Key> {
        let (kind, rest) = s.split_once(':')?;
        let (id, value) = rest.split_once(':')?;
        let id = HostId::parse(id)?;
        match (sort, kind) {
            (Sorted::Hostname, "n") => Some(Key::Name(value.to_owned(), id)),
            (Sorted::LastSeen, "t") => Some(Key::Seen(value.parse().ok()?, id)),
            _ => None,
        }
    }
}

/// Every host's sort keys, as of `at`.
#[derive(Debug)]
pub(crate) struct HostOrder {
    pub(crate) at: i64,
    by_name: Vec<Key>,
    by_seen: Vec<Key>,
}

impl HostOrder {
    /// The keys after `after`, in order.
    pub(crate) fn after(&self, sort: Sorted, after: Option<&Key>) -> &[Key] {
        let keys = match sort {
            Sorted::LastSeen => &self.by_seen,
            Sorted::Hostname => &self.by_name,
        };
        let from = after.map_or(0, |a| keys.partition_point(|k| k <= a));
        &keys[from..]
    }
}

impl Admin {
    /// The current order, made again when it is too old (one request at a
    /// time makes it; the others wait for that one).
    pub(crate) async fn host_order(&self) -> Result<Arc<HostOrder>, ApiError> {
        let mut held = self.host_order.lock().await;
        let now = self.now();
        if let Some(o) = held.as_ref() {
            let age = now - o.at;
            let max =
                i64::try_from(max_age(o.by_name.len() as u64).as_millis()).unwrap_or(i64::MAX);
            if (0..max).contains(&age) {
                return Ok(o.clone());
            }
        }
        let mut by_name = Vec::new();
        let mut by_seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.store.list_hosts(cursor.as_deref(), 1000).await?;
            for h in &page.items {
                by_name.push(Key::of(Sorted::Hostname, h));
                by_seen.push(Key::of(Sorted::LastSeen, h));
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        by_name.sort_unstable();
        by_seen.sort_unstable();
        let o = Arc::new(HostOrder {
            at: now,
            by_name,
            by_seen,
        });
        *held = Some(o.clone());
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_keys_order_as_promised() {
        let a = HostId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let b = HostId::parse("fedcba9876543210fedcba9876543210").unwrap();
        for k in [
            Key::Name("web:01".into(), a.clone()),
            Key::Seen(-1_700_000_000_000, b.clone()),
        ] {
            let sort = if matches!(k, Key::Name(..)) {
                Sorted::Hostname
            } else {
                Sorted::LastSeen
            };
            assert_eq!(Key::parse(sort, &k.cursor()), Some(k));
        }
        assert_eq!(Key::parse(Sorted::LastSeen, "n:x:y"), None);
        // Most recent first: a later check-in sorts before an earlier one.
        assert!(Key::Seen(-20, b.clone()) < Key::Seen(-10, a.clone()));
        let order = HostOrder {
            at: 0,
            by_name: vec![
                Key::Name("a".into(), b.clone()),
                Key::Name("b".into(), a.clone()),
            ],
            by_seen: vec![],
        };
        let first = order.after(Sorted::Hostname, None)[0].clone();
        assert_eq!(order.after(Sorted::Hostname, Some(&first)).len(), 1);
    }
}
