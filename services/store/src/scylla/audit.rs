//! The ScyllaDB adapter's audit log (newest first).

use gatehouse_core::ports::AuditStore;

use super::*;

#[async_trait]
impl AuditStore for ScyllaStore {
    async fn append_audit(&self, e: &AuditEvent) -> StoreResult<()> {
        let day = day_of(e.at / 1000);
        self.inner
            .exec(Q::PutAudit, (day, i64::MAX - e.at, e.id.as_str(), enc(e)?))
            .await?;
        self.note_recent("audit_day", day).await
    }

    async fn list_audit(
        &self,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEvent>> {
        self.newest_first("audit_day", statements::audit_of_day, before, limit)
            .await
    }
}
