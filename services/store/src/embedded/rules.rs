//! The embedded store's rules, alerts and dead letters.

use gatehouse_core::ports::RuleStore;

use super::*;

#[async_trait]
impl RuleStore for EmbeddedStore {
    async fn put_rule(&self, r: &Rule) -> StoreResult<()> {
        let (k, v) = (format!("r/{}", r.name).into_bytes(), enc(r)?);
        self.run(move |i| i.commit(vec![(&i.defs, k, v)])).await
    }

    async fn delete_rule(&self, name: &str) -> StoreResult<bool> {
        let k = format!("r/{name}").into_bytes();
        self.run(move |i| i.delete(&i.defs, &k)).await
    }

    async fn list_rules(&self) -> StoreResult<Vec<Rule>> {
        self.run(|i| i.scan_json(&i.defs, b"r/")).await
    }

    async fn put_alert(&self, a: &Alert) -> StoreResult<()> {
        let (k, v) = (audit_key(a.at, &a.id), enc(a)?);
        self.run(move |i| i.commit(vec![(&i.alerts, k, v)])).await
    }

    async fn get_alert(&self, at: i64, id: &str) -> StoreResult<Option<Alert>> {
        let k = audit_key(at, id);
        self.run(move |i| i.get_json(&i.alerts, &k)).await
    }

    async fn list_alerts(
        &self,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<Alert>> {
        let from = before.map(|(at, id)| audit_key(at, id));
        self.run(move |i| i.newest_first(&i.alerts, from, limit))
            .await
    }

    async fn put_dead_letter(&self, d: &DeadLetter) -> StoreResult<()> {
        let (k, v) = (d.id.clone().into_bytes(), enc(d)?);
        self.run(move |i| i.commit(vec![(&i.dead, k, v)])).await
    }

    async fn get_dead_letter(&self, id: &str) -> StoreResult<Option<DeadLetter>> {
        let k = id.as_bytes().to_vec();
        self.run(move |i| i.get_json(&i.dead, &k)).await
    }

    async fn list_dead_letters(&self) -> StoreResult<Vec<DeadLetter>> {
        self.run(|i| i.scan_json(&i.dead, b"")).await
    }

    async fn delete_dead_letter(&self, id: &str) -> StoreResult<bool> {
        let k = id.as_bytes().to_vec();
        self.run(move |i| i.delete(&i.dead, &k)).await
    }
}
