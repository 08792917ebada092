//! The ScyllaDB adapter's rules, alerts and dead letters.

use gatehouse_core::ports::RuleStore;

use super::*;

#[async_trait]
impl RuleStore for ScyllaStore {
    async fn put_rule(&self, r: &Rule) -> StoreResult<()> {
        self.put_def("rule", &r.name, r).await
    }

    async fn delete_rule(&self, name: &str) -> StoreResult<bool> {
        self.delete_def("rule", name).await
    }

    async fn list_rules(&self) -> StoreResult<Vec<Rule>> {
        self.list_defs("rule").await
    }

    async fn put_alert(&self, a: &Alert) -> StoreResult<()> {
        let day = day_of(a.at / 1000);
        self.inner
            .exec(Q::PutAlert, (day, i64::MAX - a.at, a.id.as_str(), enc(a)?))
            .await?;
        self.note_recent("alert_day", day).await
    }

    async fn get_alert(&self, at: i64, id: &str) -> StoreResult<Option<Alert>> {
        let key = (day_of(at / 1000), i64::MAX - at, id);
        match self.inner.one::<(Vec<u8>,)>(Q::GetAlert, key).await? {
            Some((doc,)) => dec("get_alert", &doc).map(Some),
            None => Ok(None),
        }
    }

    async fn list_alerts(
        &self,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<Alert>> {
        self.newest_first("alert_day", statements::alerts_of_day, before, limit)
            .await
    }

    async fn put_dead_letter(&self, d: &DeadLetter) -> StoreResult<()> {
        self.inner
            .exec(Q::PutDeadLetter, ("all", d.id.as_str(), enc(d)?))
            .await
            .map(|_| ())
    }

    async fn get_dead_letter(&self, id: &str) -> StoreResult<Option<DeadLetter>> {
        match self
            .inner
            .one::<(Vec<u8>,)>(Q::GetDeadLetter, ("all", id))
            .await?
        {
            Some((doc,)) => dec("get_dead_letter", &doc).map(Some),
            None => Ok(None),
        }
    }

    async fn list_dead_letters(&self) -> StoreResult<Vec<DeadLetter>> {
        self.inner
            .docs(Q::ListDeadLetters, ("all",), usize::MAX)
            .await
    }

    async fn delete_dead_letter(&self, id: &str) -> StoreResult<bool> {
        let res = self.inner.exec(Q::DeleteDeadLetter, ("all", id)).await?;
        Ok(lwt_applied(res)?.unwrap_or(true))
    }
}
