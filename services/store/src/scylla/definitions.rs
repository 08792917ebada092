//! The ScyllaDB adapter's config definitions, config generation and
//! content-addressed config blobs.

use gatehouse_core::ports::DefinitionStore;

use super::*;

#[async_trait]
impl DefinitionStore for ScyllaStore {
    async fn put_query(&self, q: &Query) -> StoreResult<()> {
        self.put_def("query", &q.name, q).await
    }

    async fn delete_query(&self, name: &str) -> StoreResult<bool> {
        self.delete_def("query", name).await
    }

    async fn list_queries(&self) -> StoreResult<Vec<Query>> {
        self.list_defs("query").await
    }

    async fn put_label_query(&self, q: &LabelQuery) -> StoreResult<()> {
        self.put_def("label_query", &q.label, q).await
    }

    async fn delete_label_query(&self, label: &str) -> StoreResult<bool> {
        self.delete_def("label_query", label).await
    }

    async fn list_label_queries(&self) -> StoreResult<Vec<LabelQuery>> {
        self.list_defs("label_query").await
    }

    async fn put_schedule(&self, s: &Schedule) -> StoreResult<()> {
        self.put_def("schedule", &s.name, s).await
    }

    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        self.delete_def("schedule", name).await
    }

    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>> {
        self.list_defs("schedule").await
    }

    async fn put_label_config(&self, c: &LabelConfig) -> StoreResult<()> {
        self.put_def("label_config", &c.label, c).await
    }

    async fn delete_label_config(&self, label: &str) -> StoreResult<bool> {
        self.delete_def("label_config", label).await
    }

    async fn list_label_configs(&self) -> StoreResult<Vec<LabelConfig>> {
        self.list_defs("label_config").await
    }

    async fn bump_config_generation(&self) -> StoreResult<u64> {
        let i = &self.inner;
        // Paxos compare-and-set; a lost race re-reads and tries again.
        if i.one::<(i64,)>(Q::GetGeneration, (CONFIG_GENERATION,))
            .await?
            .is_none()
        {
            // The first bump ever: create the row (a conditional insert, so
            // two first bumps agree on it).
            i.exec(Q::InitGeneration, (CONFIG_GENERATION, 0i64)).await?;
        }
        for _ in 0..64 {
            let current = self.config_generation().await?;
            let current = i64::try_from(current).unwrap_or(i64::MAX - 1);
            let (q, values) = statements::bump_generation(current);
            if lwt_applied(i.exec(q, values).await?)? == Some(true) {
                return Ok(u64::try_from(current + 1).unwrap_or(0));
            }
            tokio::time::sleep(Duration::from_millis(fastrand::u64(1..20))).await;
        }
        Err(StoreError::Conflict(
            "config generation is contended; retry".into(),
        ))
    }

    async fn config_generation(&self) -> StoreResult<u64> {
        Ok(self
            .inner
            .one::<(i64,)>(Q::GetGeneration, (CONFIG_GENERATION,))
            .await?
            .map(|(v,)| u64::try_from(v).unwrap_or(0))
            .unwrap_or(0))
    }

    async fn put_config_blob(&self, hash: &str, bytes: &[u8]) -> StoreResult<()> {
        // Content-addressed: rewriting the same bytes is harmless.
        self.inner.exec(Q::PutBlob, (hash, bytes)).await.map(|_| ())
    }

    async fn get_config_blob(&self, hash: &str) -> StoreResult<Option<Bytes>> {
        Ok(self
            .inner
            .one::<(Vec<u8>,)>(Q::GetBlob, (hash,))
            .await?
            .map(|(b,)| Bytes::from(b)))
    }
}
