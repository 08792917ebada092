//! The ScyllaDB adapter's small named values.

use gatehouse_core::ports::MetaStore;

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
}
