//! The embedded store's config definitions, config generation and
//! content-addressed config blobs.

use gatehouse_core::ports::DefinitionStore;

use super::*;

#[async_trait]
impl DefinitionStore for EmbeddedStore {
    async fn put_query(&self, q: &Query) -> StoreResult<()> {
        let (k, v) = (format!("q/{}", q.name).into_bytes(), enc(q)?);
        self.run(move |i| i.commit(vec![(&i.defs, k, v)])).await
    }

    async fn delete_query(&self, name: &str) -> StoreResult<bool> {
        let k = format!("q/{name}").into_bytes();
        self.run(move |i| i.delete(&i.defs, &k)).await
    }

    async fn list_queries(&self) -> StoreResult<Vec<Query>> {
        self.run(|i| i.scan_json(&i.defs, b"q/")).await
    }

    async fn put_label_query(&self, q: &LabelQuery) -> StoreResult<()> {
        let (k, v) = (format!("lq/{}", q.label).into_bytes(), enc(q)?);
        self.run(move |i| i.commit(vec![(&i.defs, k, v)])).await
    }

    async fn delete_label_query(&self, label: &str) -> StoreResult<bool> {
        let k = format!("lq/{label}").into_bytes();
        self.run(move |i| i.delete(&i.defs, &k)).await
    }

    async fn list_label_queries(&self) -> StoreResult<Vec<LabelQuery>> {
        self.run(|i| i.scan_json(&i.defs, b"lq/")).await
    }

    async fn put_schedule(&self, s: &Schedule) -> StoreResult<()> {
        let (k, v) = (format!("s/{}", s.name).into_bytes(), enc(s)?);
        self.run(move |i| i.commit(vec![(&i.defs, k, v)])).await
    }

    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        let k = format!("s/{name}").into_bytes();
        self.run(move |i| i.delete(&i.defs, &k)).await
    }

    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>> {
        self.run(|i| i.scan_json(&i.defs, b"s/")).await
    }

    async fn put_label_config(&self, c: &LabelConfig) -> StoreResult<()> {
        let (k, v) = (format!("l/{}", c.label).into_bytes(), enc(c)?);
        self.run(move |i| i.commit(vec![(&i.defs, k, v)])).await
    }

    async fn delete_label_config(&self, label: &str) -> StoreResult<bool> {
        let k = format!("l/{label}").into_bytes();
        self.run(move |i| i.delete(&i.defs, &k)).await
    }

    async fn list_label_configs(&self) -> StoreResult<Vec<LabelConfig>> {
        self.run(|i| i.scan_json(&i.defs, b"l/")).await
    }

    async fn bump_config_generation(&self) -> StoreResult<u64> {
        self.run(|i| {
            let _g = i.rmw.lock().map_err(|_| unavailable("lock poisoned"))?;
            let next = i.counter("config_generation")? + 1;
            i.commit(vec![(
                &i.meta,
                b"config_generation".to_vec(),
                next.to_be_bytes().to_vec(),
            )])?;
            Ok(next)
        })
        .await
    }

    async fn config_generation(&self) -> StoreResult<u64> {
        self.run(|i| i.counter("config_generation")).await
    }

    async fn put_config_blob(&self, hash: &str, bytes: &[u8]) -> StoreResult<()> {
        let (k, v) = (hash.as_bytes().to_vec(), bytes.to_vec());
        self.run(move |i| {
            if i.blobs.contains_key(&k).map_err(unavailable)? {
                return Ok(());
            }
            i.commit(vec![(&i.blobs, k, v)])
        })
        .await
    }

    async fn get_config_blob(&self, hash: &str) -> StoreResult<Option<Bytes>> {
        let k = hash.as_bytes().to_vec();
        self.run(move |i| {
            Ok(i.blobs
                .get(&k)
                .map_err(unavailable)?
                .map(|v| Bytes::copy_from_slice(&v)))
        })
        .await
    }
}
