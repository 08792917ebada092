//! The embedded store's small named values, and its health.

use gatehouse_core::ports::{MetaStore, StoreHealth};

use super::*;

#[async_trait]
impl MetaStore for EmbeddedStore {
    async fn get_meta(&self, key: &str) -> StoreResult<Option<Bytes>> {
        let k = key.as_bytes().to_vec();
        self.run(move |i| {
            Ok(i.meta
                .get(&k)
                .map_err(unavailable)?
                .map(|v| Bytes::copy_from_slice(&v)))
        })
        .await
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        let (k, v) = (key.as_bytes().to_vec(), value.to_vec());
        self.run(move |i| i.commit(vec![(&i.meta, k, v)])).await
    }

    /// Refusing writes when its filesystem is full (below
    /// [`REOPEN_HEADROOM`]: the next write fails) or while it is reopened
    /// after a failed write; log batches below the watermark.
    async fn health(&self) -> StoreResult<StoreHealth> {
        let dir = &self.shared.dir;
        let free = free_bytes(dir)?;
        let min = self.shared.options.min_free_disk_bytes;
        let writes_refused = if free < REOPEN_HEADROOM {
            Some(format!("disk full at {}: {free} bytes free", dir.display()))
        } else {
            self.current().err().map(|e| e.to_string())
        };
        let logs_refused = (min > 0 && free < min).then(|| {
            StoreError::DiskLow {
                path: dir.display().to_string(),
                free,
                min,
            }
            .to_string()
        });
        let (journal_syncs, journal_batches, log_journal_syncs, log_journal_batches) =
            match self.current() {
                Ok(inner) => {
                    let (syncs, batches) = inner.sync.counts();
                    let (log_syncs, log_batches) = inner.logs.sync.counts();
                    (
                        Some(syncs),
                        Some(batches),
                        Some(log_syncs),
                        Some(log_batches),
                    )
                }
                Err(_) => (None, None, None, None),
            };
        Ok(StoreHealth {
            free_bytes: Some(free),
            writes_refused,
            logs_refused,
            journal_syncs,
            journal_batches,
            log_journal_syncs,
            log_journal_batches,
        })
    }
}
