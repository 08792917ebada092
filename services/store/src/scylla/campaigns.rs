//! The ScyllaDB adapter's live-query campaigns, deliveries and answers
//! (bounded partitions per campaign).

use gatehouse_core::ports::CampaignStore;

use super::*;

#[async_trait]
impl CampaignStore for ScyllaStore {
    async fn create_campaign(&self, c: &Campaign, targets: &[HostId]) -> StoreResult<()> {
        let i = &self.inner;
        let buckets = campaign_buckets(targets.len() as u64);
        // Owned values: the writes run concurrently in futures that must
        // not borrow from this call.
        let mut by_bucket: HashMap<i32, Vec<(String, i32, String, Vec<u8>)>> = HashMap::new();
        let mut points = Vec::with_capacity(targets.len());
        let mut open = Vec::with_capacity(targets.len());
        for h in targets {
            let b = bucket_of(h, buckets);
            let d = Delivery::queued(&c.id, h, c.created_at);
            let doc = enc(&d)?;
            points.push((Q::PutDelivery, (c.id.clone(), h.to_string(), doc.clone())));
            by_bucket
                .entry(b)
                .or_default()
                .push((c.id.clone(), b, h.to_string(), doc));
            open.push((Q::PutOpen, (h.to_string(), c.id.clone(), b)));
        }
        // Deliveries, then the per-host open rows, then the campaign: a
        // reader never sees a campaign whose deliveries are missing.
        stream::iter(by_bucket.into_values())
            .map(|rows| i.batch(Q::PutCampaignDelivery, rows))
            .buffer_unordered(i.fan_out)
            .try_collect::<Vec<()>>()
            .await?;
        i.fan_out_writes(points).await?;
        i.fan_out_writes(open).await?;
        let (month, inv) = recent_keys(c.created_at);
        i.exec(
            Q::PutCampaign,
            (c.id.as_str(), i32::try_from(buckets).unwrap_or(1), enc(c)?),
        )
        .await?;
        i.remember_buckets(&c.id, buckets)?;
        i.exec(Q::PutCampaignByMonth, (month, inv, c.id.as_str()))
            .await?;
        self.note_recent("campaign", month).await
    }

    async fn update_campaign(&self, c: &Campaign) -> StoreResult<bool> {
        let i = &self.inner;
        // The record keeps the bucket count its deliveries were spread over.
        let Some((buckets, _)) = i
            .one::<(i32, Vec<u8>)>(Q::GetCampaign, (c.id.as_str(),))
            .await?
        else {
            return Ok(false);
        };
        i.exec(Q::PutCampaign, (c.id.as_str(), buckets, enc(c)?))
            .await?;
        Ok(true)
    }

    async fn get_campaign(&self, id: &str) -> StoreResult<Option<Campaign>> {
        match self
            .inner
            .one::<(i32, Vec<u8>)>(Q::GetCampaign, (id,))
            .await?
        {
            Some((_, doc)) => dec(id, &doc).map(Some),
            None => Ok(None),
        }
    }

    async fn list_campaigns(
        &self,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<Campaign>> {
        let ids = self
            .recent_ids("campaign", Q::CampaignsInMonth, before, limit)
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            // A campaign past its TTL leaves no record; skip it.
            if let Some(c) = self.get_campaign(&id).await? {
                out.push(c);
            }
        }
        Ok(out)
    }

    async fn open_deliveries(&self, host: &HostId) -> StoreResult<Vec<(Campaign, Delivery)>> {
        let i = &self.inner;
        let open: Vec<(String, i32)> = i.rows(Q::OpenOfHost, (host.as_str(),), usize::MAX).await?;
        let mut out = Vec::new();
        for (cid, _bucket) in open {
            let Some(c) = self.get_campaign(&cid).await? else {
                continue;
            };
            let Some(d) = self.get_delivery(&cid, host).await? else {
                continue;
            };
            if !d.state.is_final() {
                out.push((c, d));
            }
        }
        Ok(out)
    }

    async fn put_delivery(&self, d: &Delivery, fence: Fence) -> StoreResult<bool> {
        // Only the host's fenced owner writes its deliveries, one request
        // at a time: the check and the write do not race another writer.
        if self
            .get_delivery(&d.campaign_id, &d.host_id)
            .await?
            .is_some_and(|stored| stored.state.is_final())
        {
            return Ok(false);
        }
        let i = &self.inner;
        let buckets = i
            .buckets_of(&d.campaign_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("campaign {}", d.campaign_id)))?;
        let b = bucket_of(&d.host_id, buckets);
        let doc = enc(d)?;
        i.exec_fenced(
            Q::PutDelivery,
            (d.campaign_id.as_str(), d.host_id.as_str(), &doc),
            fence,
        )
        .await?;
        i.exec_fenced(
            Q::PutCampaignDelivery,
            (d.campaign_id.as_str(), b, d.host_id.as_str(), &doc),
            fence,
        )
        .await?;
        if d.state.is_final() {
            i.exec_fenced(
                Q::DeleteOpen,
                (d.host_id.as_str(), d.campaign_id.as_str()),
                fence,
            )
            .await?;
        }
        Ok(true)
    }

    async fn get_delivery(&self, campaign: &str, host: &HostId) -> StoreResult<Option<Delivery>> {
        match self
            .inner
            .one::<(Vec<u8>,)>(Q::GetDelivery, (campaign, host.as_str()))
            .await?
        {
            Some((doc,)) => dec(campaign, &doc).map(Some),
            None => Ok(None),
        }
    }

    async fn record_results(&self, results: &[CampaignResult], fence: Fence) -> StoreResult<()> {
        let i = &self.inner;
        for r in results {
            let buckets = i
                .buckets_of(&r.campaign_id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("campaign {}", r.campaign_id)))?;
            let b = bucket_of(&r.host_id, buckets);
            let d = self
                .get_delivery(&r.campaign_id, &r.host_id)
                .await?
                .unwrap_or_else(|| Delivery::queued(&r.campaign_id, &r.host_id, r.received_at))
                .finished_by(r);
            // The answer first: a delivery is never final without it.
            i.exec(
                Q::PutCampaignResult,
                (r.campaign_id.as_str(), b, r.host_id.as_str(), enc(r)?),
            )
            .await?;
            let doc = enc(&d)?;
            i.exec_fenced(
                Q::PutDelivery,
                (r.campaign_id.as_str(), r.host_id.as_str(), &doc),
                fence,
            )
            .await?;
            i.exec_fenced(
                Q::PutCampaignDelivery,
                (r.campaign_id.as_str(), b, r.host_id.as_str(), &doc),
                fence,
            )
            .await?;
            i.exec_fenced(
                Q::DeleteOpen,
                (r.host_id.as_str(), r.campaign_id.as_str()),
                fence,
            )
            .await?;
        }
        Ok(())
    }

    async fn list_deliveries(&self, campaign: &str) -> StoreResult<Vec<Delivery>> {
        let i = &self.inner;
        let Some(buckets) = i.buckets_of(campaign).await? else {
            return Ok(Vec::new());
        };
        let parts: Vec<Vec<Delivery>> = stream::iter(0..i32::try_from(buckets).unwrap_or(1))
            .map(|b| i.docs::<Delivery>(Q::DeliveriesInBucket, (campaign, b), usize::MAX))
            .buffered(i.fan_out)
            .try_collect()
            .await?;
        Ok(parts.into_iter().flatten().collect())
    }

    async fn list_results(&self, campaign: &str) -> StoreResult<Vec<CampaignResult>> {
        let i = &self.inner;
        let Some(buckets) = i.buckets_of(campaign).await? else {
            return Ok(Vec::new());
        };
        let parts: Vec<Vec<CampaignResult>> = stream::iter(0..i32::try_from(buckets).unwrap_or(1))
            .map(|b| i.docs::<CampaignResult>(Q::ResultsInBucket, (campaign, b), usize::MAX))
            .buffered(i.fan_out)
            .try_collect()
            .await?;
        Ok(parts.into_iter().flatten().collect())
    }

    async fn get_result(
        &self,
        campaign: &str,
        host: &HostId,
    ) -> StoreResult<Option<CampaignResult>> {
        let i = &self.inner;
        let Some(buckets) = i.buckets_of(campaign).await? else {
            return Ok(None);
        };
        let b = bucket_of(host, buckets);
        match i
            .one::<(Vec<u8>,)>(Q::GetCampaignResult, (campaign, b, host.as_str()))
            .await?
        {
            Some((doc,)) => dec(campaign, &doc).map(Some),
            None => Ok(None),
        }
    }
}
