//! The embedded store's small named values.

use gatehouse_core::ports::MetaStore;

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
}
