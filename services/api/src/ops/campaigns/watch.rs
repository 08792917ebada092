//! Live campaign results for operators: the answers already stored, then
//! each new one as its host's actor stores it (announced on the bus, so a
//! watcher on any api process sees answers from every hostd), with the
//! coverage re-read from the store every few seconds, until every target
//! answered or failed, or the campaign expired, or the watcher left.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_bus::events::campaign_result;
use gatehouse_core::HostId;
use gatehouse_core::model::{Campaign, CampaignResult, DeliveryState};
use gatehouse_core::ports::Store;
use gatehouse_core::time::Clock;
use gatehouse_proto::topics::CAMPAIGN_ANSWERS;
use serde::Serialize;
use tokio::sync::mpsc;

use super::Coverage;
use crate::ApiError;
use crate::admin::Admin;

/// One message of a campaign watch.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CampaignEvent {
    /// A host's answer (each host once).
    Result { result: CampaignResult },
    /// Where the campaign stands.
    Progress { coverage: Coverage },
    /// The last message: every target answered or failed, or the campaign
    /// expired or was cancelled; the hosts that never answered.
    Done {
        coverage: Coverage,
        expired: bool,
        non_responders: Vec<HostId>,
    },
}

impl CampaignEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            CampaignEvent::Result { .. } => "result",
            CampaignEvent::Progress { .. } => "progress",
            CampaignEvent::Done { .. } => "done",
        }
    }
}

impl Admin {
    pub(super) async fn watch_campaign(
        &self,
        id: &str,
    ) -> Result<mpsc::Receiver<CampaignEvent>, ApiError> {
        let campaign = self.campaign(id).await?;
        // Subscribed before the stored answers are read: none falls between.
        let sub = self
            .bus
            .subscribe(&CAMPAIGN_ANSWERS.subject(id), None)
            .await
            .map_err(|e| ApiError::Unavailable(format!("campaign events: {e}")))?;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(watch(
            self.store.clone(),
            self.clock.clone(),
            campaign,
            sub,
            tx,
        ));
        Ok(rx)
    }
}

/// Coverage and non-responders from the stored deliveries.
async fn standing(
    store: &Arc<dyn Store>,
    now: i64,
    c: &Campaign,
) -> Result<(Coverage, Vec<HostId>), ApiError> {
    let ds = store.list_deliveries(&c.id).await?;
    let coverage = super::coverage(&ds, c, now);
    let non_responders = ds
        .into_iter()
        .filter(|d| {
            !matches!(
                d.effective_state(c.expires_at, now),
                DeliveryState::Answered | DeliveryState::Failed
            )
        })
        .map(|d| d.host_id)
        .collect();
    Ok((coverage, non_responders))
}

fn finished(c: &Campaign, cov: &Coverage, now: i64) -> bool {
    cov.answered + cov.failed >= c.target_count || c.is_expired(now)
}

async fn watch(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    mut c: Campaign,
    mut sub: gatehouse_core::ports::Subscription,
    tx: mpsc::Sender<CampaignEvent>,
) {
    let r = async {
        let mut seen: HashSet<HostId> = HashSet::new();
        for result in store.list_results(&c.id).await? {
            if seen.insert(result.host_id.clone())
                && tx.send(CampaignEvent::Result { result }).await.is_err()
            {
                return Ok(());
            }
        }
        let (mut coverage, _) = standing(&store, clock.now_ms(), &c).await?;
        // Answers stored between the first read and `standing` were
        // counted there: send them now and mark them seen, so their
        // broadcast is not counted again (which once ended a watch with a
        // host still pending).
        for result in store.list_results(&c.id).await? {
            if seen.insert(result.host_id.clone())
                && tx.send(CampaignEvent::Result { result }).await.is_err()
            {
                return Ok(());
            }
        }
        if tx
            .send(CampaignEvent::Progress {
                coverage: coverage.clone(),
            })
            .await
            .is_err()
        {
            return Ok(());
        }
        // Big campaigns re-read their deliveries less often.
        let every = if c.target_count > 10_000 {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(2)
        };
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let expiry = Duration::from_millis(u64::try_from(c.expires_at - clock.now_ms()).unwrap_or(0));
        let expired = tokio::time::sleep(expiry);
        tokio::pin!(expired);
        while !finished(&c, &coverage, clock.now_ms()) {
            tokio::select! {
                _ = tx.closed() => return Ok(()),
                _ = &mut expired => break,
                m = sub.next() => {
                    let Some(m) = m else { break };
                    let result = match CAMPAIGN_ANSWERS.decode(m.payload).map_err(Into::into).and_then(campaign_result) {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(campaign = %c.id, error = %e, "undecodable campaign answer");
                            continue;
                        }
                    };
                    if !seen.insert(result.host_id.clone()) {
                        continue;
                    }
                    // Counted at once; the store's view follows on the tick.
                    if result.status == 0 {
                        coverage.answered += 1;
                    } else {
                        coverage.failed += 1;
                    }
                    coverage.delivered = coverage.delivered.saturating_sub(1);
                    if tx.send(CampaignEvent::Result { result }).await.is_err() {
                        return Ok(());
                    }
                }
                _ = tick.tick() => {
                    // A cancelled campaign ends the watch at once.
                    if let Some(fresh) = store.get_campaign(&c.id).await?
                        && fresh.cancelled_at.is_some()
                    {
                        c = fresh;
                        break;
                    }
                    let (now, _) = standing(&store, clock.now_ms(), &c).await?;
                    if now != coverage {
                        coverage = now;
                        if tx.send(CampaignEvent::Progress { coverage: coverage.clone() }).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        let (coverage, non_responders) = standing(&store, clock.now_ms(), &c).await?;
        let _ = tx
            .send(CampaignEvent::Done {
                expired: c.is_expired(clock.now_ms()),
                coverage,
                non_responders,
            })
            .await;
        Ok::<(), ApiError>(())
    }
    .await;
    if let Err(e) = r {
        tracing::warn!(campaign = %c.id, error = %e, "campaign watch ended early");
    }
}
