//! The config cache: label set -> assembled config hash, per generation.
//!
//! Definitions are loaded from the store once per config generation; each
//! distinct label set is assembled once, its blob written to the store
//! (content-addressed, so edges can fetch it by hash), and shared by every
//! host carrying those labels.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gatehouse_core::config::{ConfigError, Definitions, assemble, load_definitions};
use gatehouse_core::ports::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ConfigCacheError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Loaded {
    generation: u64,
    defs: Arc<Definitions>,
    by_labels: HashMap<Vec<String>, String>,
}

pub struct ConfigCache {
    store: Arc<dyn Store>,
    /// Newest generation we know of (from broadcasts and polling).
    known: AtomicU64,
    loaded: Mutex<Option<Loaded>>,
    reload: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ConfigCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigCache")
            .field("known", &self.known.load(Ordering::Relaxed))
            .finish()
    }
}

impl ConfigCache {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            known: AtomicU64::new(0),
            loaded: Mutex::new(None),
            reload: tokio::sync::Mutex::new(()),
        }
    }

    /// Records that `generation` exists; the next lookup reloads. Whether
    /// it is newer than any known before.
    pub fn observe(&self, generation: u64) -> bool {
        self.known.fetch_max(generation, Ordering::AcqRel) < generation
    }

    /// Reads the store's generation (a broadcast may have been missed);
    /// whether it is newer than any known before.
    pub async fn refresh_generation(&self) -> Result<bool, StoreError> {
        let g = self.store.config_generation().await?;
        Ok(self.observe(g))
    }

    fn cached(&self, labels: &[String]) -> Option<(String, u64)> {
        let known = self.known.load(Ordering::Acquire);
        let guard = self.loaded.lock().ok()?;
        let l = guard.as_ref()?;
        if l.generation < known {
            return None;
        }
        l.by_labels.get(labels).map(|h| (h.clone(), l.generation))
    }

    /// The config hash (and generation) for a host with `labels`.
    pub async fn config_for(&self, labels: &[String]) -> Result<(String, u64), ConfigCacheError> {
        if let Some(hit) = self.cached(labels) {
            return Ok(hit);
        }
        let defs = self.definitions().await?;
        let (generation, defs) = defs;
        let assembled = assemble(labels, &defs)?;
        self.store
            .put_config_blob(&assembled.hash, &assembled.bytes)
            .await?;
        if let Ok(mut guard) = self.loaded.lock()
            && let Some(l) = guard.as_mut()
            && l.generation == generation
        {
            l.by_labels.insert(labels.to_vec(), assembled.hash.clone());
        }
        Ok((assembled.hash, generation))
    }

    /// The definitions of the newest generation known (loaded once per
    /// generation).
    pub async fn definitions(&self) -> Result<(u64, Arc<Definitions>), StoreError> {
        let known = self.known.load(Ordering::Acquire);
        let current = |known: u64| -> Option<(u64, Arc<Definitions>)> {
            let guard = self.loaded.lock().ok()?;
            let l = guard.as_ref()?;
            (l.generation >= known).then(|| (l.generation, l.defs.clone()))
        };
        if let Some(c) = current(known) {
            return Ok(c);
        }
        let _one_loader = self.reload.lock().await;
        if let Some(c) = current(self.known.load(Ordering::Acquire)) {
            return Ok(c);
        }
        // Read the generation first: definitions written after it are at
        // least as new, so we never cache old definitions as new.
        let generation = self
            .store
            .config_generation()
            .await?
            .max(self.known.load(Ordering::Acquire));
        let defs = Arc::new(load_definitions(self.store.as_ref()).await?);
        tracing::info!(
            generation,
            schedules = defs.schedules.len(),
            "config definitions loaded"
        );
        if let Ok(mut guard) = self.loaded.lock() {
            *guard = Some(Loaded {
                generation,
                defs: defs.clone(),
                by_labels: HashMap::new(),
            });
        }
        self.observe(generation);
        Ok((generation, defs))
    }
}
