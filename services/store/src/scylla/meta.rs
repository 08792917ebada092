//! The ScyllaDB adapter's small named values, and its health.

use gatehouse_core::ports::{MetaStore, StoreHealth};

use super::*;

#[async_trait]
impl MetaStore for ScyllaStore {
    async fn get_meta(&self, key: &str) -> StoreResult<Option<Bytes>> {
        Ok(self
            .inner
            .one::<(Vec<u8>,)>(Q::GetMeta, (key,))
            .await?
            .map(|(v,)| Bytes::from(v)))
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.inner.exec(Q::PutMeta, (key, value)).await.map(|_| ())
    }

    /// One small read, bounded by [`HEALTH_TIMEOUT`]: unavailable when
    /// no node answers it.
    async fn health(&self) -> StoreResult<StoreHealth> {
        match tokio::time::timeout(HEALTH_TIMEOUT, self.get_meta("health")).await {
            Ok(Ok(_)) => Ok(StoreHealth::default()),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("ScyllaDB: {e}"))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "ScyllaDB did not answer a read within {} s",
                HEALTH_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// How long a health read may take before the store counts as unavailable.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
