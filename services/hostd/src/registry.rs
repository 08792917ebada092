//! The live host actors of one hostd, by host id.
//!
//! A map per hostd rather than a process-wide one, so several hostd
//! instances can share one process (tests, the all-in-one). A `OnceCell`
//! per entry makes concurrent first requests spawn one actor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gatehouse_core::HostId;
use tokio::sync::OnceCell;

use crate::actor::HostRef;

type Cell = Arc<OnceCell<HostRef>>;

#[derive(Default)]
pub struct Registry {
    actors: Mutex<HashMap<HostId, Cell>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("actors", &self.len())
            .finish()
    }
}

impl Registry {
    /// The cell for `host`, created empty when absent.
    pub fn cell(&self, host: &HostId) -> Cell {
        let mut map = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(host.clone()).or_default().clone()
    }

    pub fn get(&self, host: &HostId) -> Option<HostRef> {
        let map = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        map.get(host).and_then(|c| c.get().cloned())
    }

    /// Forgets `host` if its entry is still incarnation `id` (or never
    /// started).
    pub fn remove(&self, host: &HostId, id: Option<u64>) {
        let mut map = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        let same = map.get(host).is_some_and(|c| match (c.get(), id) {
            (Some(a), Some(id)) => a.id() == id,
            (None, _) => true,
            (Some(_), None) => false,
        });
        if same {
            map.remove(host);
        }
    }

    pub fn len(&self) -> usize {
        self.actors.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live actors with their hosts.
    pub fn hosts(&self) -> Vec<(HostId, HostRef)> {
        let map = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter_map(|(h, c)| c.get().map(|a| (h.clone(), a.clone())))
            .collect()
    }

    pub fn all(&self) -> Vec<HostRef> {
        self.picked(|_| true)
    }

    /// The live actors `pick` chooses.
    pub fn picked(&self, pick: impl Fn(&HostRef) -> bool) -> Vec<HostRef> {
        let map = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        map.values()
            .filter_map(|c| c.get())
            .filter(|a| pick(a))
            .cloned()
            .collect()
    }
}
