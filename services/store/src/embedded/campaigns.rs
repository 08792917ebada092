//! The embedded store's live-query campaigns, deliveries and answers.

use gatehouse_core::ports::CampaignStore;

use super::*;

#[async_trait]
impl CampaignStore for EmbeddedStore {
    async fn create_campaign(&self, c: &Campaign, targets: &[HostId]) -> StoreResult<()> {
        let mut items = vec![(0u8, c.id.as_bytes().to_vec(), enc(c)?)];
        for h in targets {
            let d = Delivery::queued(&c.id, h, c.created_at);
            items.push((1, join(&[c.id.as_bytes(), h.as_str().as_bytes()]), enc(&d)?));
            items.push((
                2,
                join(&[h.as_str().as_bytes(), c.id.as_bytes()]),
                Vec::new(),
            ));
        }
        self.run(move |i| {
            let ks = |t: u8| match t {
                0 => &i.campaigns,
                1 => &i.deliveries,
                _ => &i.open,
            };
            // Large campaigns commit in chunks; the campaign record goes
            // last so a reader never sees a campaign without deliveries.
            let mut items = items;
            let head = items.remove(0);
            while !items.is_empty() {
                let n = items.len().min(20_000);
                i.commit(items.drain(..n).map(|(t, k, v)| (ks(t), k, v)).collect())?;
            }
            i.commit(vec![(ks(head.0), head.1, head.2)])
        })
        .await
    }

    async fn get_campaign(&self, id: &str) -> StoreResult<Option<Campaign>> {
        let k = id.as_bytes().to_vec();
        self.run(move |i| i.get_json(&i.campaigns, &k)).await
    }

    async fn update_campaign(&self, c: &Campaign) -> StoreResult<bool> {
        let (k, v) = (c.id.as_bytes().to_vec(), enc(c)?);
        self.run(move |i| {
            if i.get_json::<Campaign>(&i.campaigns, &k)?.is_none() {
                return Ok(false);
            }
            i.commit(vec![(&i.campaigns, k, v)])?;
            Ok(true)
        })
        .await
    }

    async fn list_campaigns(
        &self,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<Campaign>> {
        let before = before.map(|(at, id)| (at, id.to_owned()));
        self.run(move |i| {
            let mut all: Vec<Campaign> = i.scan_json(&i.campaigns, b"")?;
            all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
            Ok(newest_first_after(all, before, limit, |c| {
                (c.created_at, &c.id)
            }))
        })
        .await
    }

    async fn open_deliveries(&self, host: &HostId) -> StoreResult<Vec<(Campaign, Delivery)>> {
        let host = host.clone();
        self.run(move |i| {
            let mut prefix = host.as_str().as_bytes().to_vec();
            prefix.push(0);
            let mut out = Vec::new();
            for g in i.open.prefix(&prefix) {
                let k = g.key().map_err(unavailable)?;
                let cid = &k[prefix.len()..];
                let Some(c) = i.get_json::<Campaign>(&i.campaigns, cid)? else {
                    continue;
                };
                let Some(d) =
                    i.get_json::<Delivery>(&i.deliveries, &join(&[cid, host.as_str().as_bytes()]))?
                else {
                    continue;
                };
                if !d.state.is_final() {
                    out.push((c, d));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn put_delivery(&self, d: &Delivery, fence: Fence) -> StoreResult<bool> {
        let k = join(&[d.campaign_id.as_bytes(), d.host_id.as_str().as_bytes()]);
        let idx = join(&[d.host_id.as_str().as_bytes(), d.campaign_id.as_bytes()]);
        let v = enc(d)?;
        let is_final = d.state.is_final();
        let host = d.host_id.clone();
        self.run(move |i| {
            let _g = i.host_lock(&host)?;
            let fenced = i.fenced(&host, fence)?;
            if i.get_json::<Delivery>(&i.deliveries, &k)?
                .is_some_and(|stored| stored.state.is_final())
            {
                return Ok(false);
            }
            let mut b = i.db.batch();
            // A delivered mark alone needs no sync wait (ADR 0053): lost
            // with the machine, it costs one more delivery of the query,
            // as an unanswered one gets after `redeliver_after`. A new
            // fence and a final state wait for the journal's sync.
            let wait = fenced.is_some() || is_final;
            if let Some((fk, f)) = fenced {
                b.insert(&i.fences, fk, f);
            }
            b.insert(&i.deliveries, k, v);
            if is_final {
                b.remove(&i.open, idx);
            }
            if wait {
                i.write(b)?;
            } else {
                i.apply(b)?;
            }
            Ok(true)
        })
        .await
    }

    async fn get_delivery(&self, campaign: &str, host: &HostId) -> StoreResult<Option<Delivery>> {
        let k = join(&[campaign.as_bytes(), host.as_str().as_bytes()]);
        self.run(move |i| i.get_json(&i.deliveries, &k)).await
    }

    async fn record_results(&self, results: &[CampaignResult], fence: Fence) -> StoreResult<()> {
        let results = results.to_vec();
        self.run(move |i| {
            // One actor's answers: one host, so one lock (the fence of
            // every host in the batch is checked all the same).
            let _g = match results.first() {
                Some(r) => Some(i.host_lock(&r.host_id)?),
                None => None,
            };
            let mut b = i.db.batch();
            let mut hosts: Vec<&HostId> = results.iter().map(|r| &r.host_id).collect();
            hosts.dedup();
            if hosts.len() > 1 && !fence.is_none() {
                return Err(StoreError::Invalid(
                    "fenced results must belong to one host".into(),
                ));
            }
            for h in hosts {
                if let Some((fk, f)) = i.fenced(h, fence)? {
                    b.insert(&i.fences, fk, f);
                }
            }
            for r in &results {
                let k = join(&[r.campaign_id.as_bytes(), r.host_id.as_str().as_bytes()]);
                let d = i
                    .get_json::<Delivery>(&i.deliveries, &k)?
                    .unwrap_or_else(|| Delivery::queued(&r.campaign_id, &r.host_id, r.received_at))
                    .finished_by(r);
                b.insert(&i.deliveries, k.clone(), enc(&d)?);
                b.insert(&i.cresults, k, enc(r)?);
                b.remove(
                    &i.open,
                    join(&[r.host_id.as_str().as_bytes(), r.campaign_id.as_bytes()]),
                );
            }
            i.write(b)
        })
        .await
    }

    async fn list_deliveries(&self, campaign: &str) -> StoreResult<Vec<Delivery>> {
        let p = join(&[campaign.as_bytes(), b""]);
        self.run(move |i| i.scan_json(&i.deliveries, &p)).await
    }

    async fn list_results(&self, campaign: &str) -> StoreResult<Vec<CampaignResult>> {
        let p = join(&[campaign.as_bytes(), b""]);
        self.run(move |i| i.scan_json(&i.cresults, &p)).await
    }

    async fn get_result(
        &self,
        campaign: &str,
        host: &HostId,
    ) -> StoreResult<Option<CampaignResult>> {
        let k = join(&[campaign.as_bytes(), host.as_str().as_bytes()]);
        self.run(move |i| i.get_json(&i.cresults, &k)).await
    }
}
