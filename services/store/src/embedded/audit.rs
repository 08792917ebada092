//! The embedded store's audit log (newest first).

use gatehouse_core::ports::AuditStore;

use super::*;

#[async_trait]
impl AuditStore for EmbeddedStore {
    async fn append_audit(&self, e: &AuditEvent) -> StoreResult<()> {
        let (k, v) = (audit_key(e.at, &e.id), enc(e)?);
        self.run(move |i| i.commit(vec![(&i.audit, k, v)])).await
    }

    async fn list_audit(
        &self,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEvent>> {
        let from = before.map(|(at, id)| audit_key(at, id));
        self.run(move |i| i.newest_first(&i.audit, from, limit))
            .await
    }
}
