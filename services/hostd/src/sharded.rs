//! hostd in a cluster: serves only the shards it holds leases for.
//!
//! Every `renew_every` it runs one lease round ([`Leases::rebalance`]):
//! - a newly acquired shard gets its own subscription (`gatehouse.host.<n>`,
//!   no queue group: the lease makes this instance its only server);
//! - a shard another live member prefers is handed over: its subscription is
//!   dropped, its actors are stopped (each persists its state), then the
//!   lease is released and the new owner picks the shard up;
//! - a shard found taken by someone else (this instance stalled past the
//!   lease TTL) is dropped at once.
//!
//! Requests that arrive for a shard this instance no longer holds are
//! answered "shard moved"; the client retries and reaches the new owner.
//! Actors are rebuilt from the store on their first request, so nothing
//! else moves. At shutdown every shard is handed over the same way; so on
//! `drain` (the control service's Drain), after which the instance stays
//! up but out of the ring (no heartbeat, no shards) until it stops.

use std::collections::BTreeMap;
use std::sync::Arc;

use gatehouse_bus::hostrpc::host_subject;
use gatehouse_core::ids::shard_of;
use gatehouse_core::ports::{Bus, BusMessage};
use gatehouse_proto::topics::{CAMPAIGN_CREATED, CONFIG_CHANGED};
use gatehouse_runtime::Shutdown;
use tokio::sync::mpsc;

use crate::actor::HostCtx;
use crate::leases::{LeaseConfig, Leases};
use crate::service::{HostdConfig, HostdError, Router, answer_if, on_campaign, on_config};

/// Forwards one shard's requests into hostd's request channel.
struct ShardSub {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ShardSub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn subscribe(
    bus: &dyn Bus,
    shard: u32,
    tx: mpsc::Sender<BusMessage>,
) -> Result<ShardSub, HostdError> {
    let mut sub = bus.subscribe(&host_subject(shard), None).await?;
    let task = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if tx.send(m).await.is_err() {
                break;
            }
        }
    });
    Ok(ShardSub { task })
}

/// Runs a sharded hostd until `shutdown`, then hands every shard over.
/// `drain` hands every shard over early and leaves the ring.
pub async fn run_sharded(
    cfg: HostdConfig,
    ctx: Arc<HostCtx>,
    bus: Arc<dyn Bus>,
    leases: Arc<Leases>,
    lease_cfg: LeaseConfig,
    drain: Shutdown,
    shutdown: Shutdown,
) -> Result<(), HostdError> {
    let _ = ctx.events.set(bus.clone());
    let router = Router::new(ctx.clone(), cfg.call_timeout);
    let shards = lease_cfg.shards;
    let (tx, mut requests) = mpsc::channel::<BusMessage>(4096);
    let mut subs: BTreeMap<u32, ShardSub> = BTreeMap::new();
    let mut campaigns = bus.subscribe(CAMPAIGN_CREATED.subject(), None).await?;
    let mut configs = bus.subscribe(CONFIG_CHANGED.subject(), None).await?;
    if let Err(e) = ctx.configs.refresh_generation().await {
        tracing::warn!(error = %e, "config generation not readable yet");
    }
    let mut poll = tokio::time::interval(cfg.generation_poll);
    let mut round = tokio::time::interval(lease_cfg.renew_every);
    tracing::info!(me = leases.me(), shards, "hostd joining the shard ring");
    let mut drained = false;
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = drain.wait(), if !drained => {
                drained = true;
                subs.clear();
                metrics().shards.set(0);
                tracing::info!(actors = router.live_actors(), "draining: handing every shard over");
                router.stop_all(cfg.drain_timeout).await;
                leases.release_all().await;
                tracing::info!("drained: out of the shard ring until stopped");
            },
            m = requests.recv() => if let Some(m) = m {
                let (router, leases) = (router.clone(), leases.clone());
                tokio::spawn(async move {
                    answer_if(router, m, |h| leases.token(shard_of(h, shards)).is_some()).await
                });
            },
            m = campaigns.next() => if let Some(m) = m {
                on_campaign(&ctx, &router, m).await;
            },
            m = configs.next() => if let Some(m) = m {
                on_config(&ctx, m);
            },
            _ = poll.tick() => {
                if let Err(e) = ctx.configs.refresh_generation().await {
                    tracing::warn!(error = %e, "config generation poll failed");
                }
            },
            _ = round.tick(), if !drained => {
                let m = metrics();
                m.actors.set(i64::try_from(router.live_actors()).unwrap_or(i64::MAX));
                m.hosts_online
                    .set(i64::try_from(router.hosts_online(cfg.online_window)).unwrap_or(i64::MAX));
                let r = match leases.rebalance().await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "shard lease round failed");
                        continue;
                    }
                };
                m.lost.inc_by(r.lost.len() as u64);
                m.handed_over.inc_by(r.to_release.len() as u64);
                for shard in r.lost {
                    subs.remove(&shard);
                    router.stop_shard(shard, shards, cfg.drain_timeout).await;
                }
                for shard in r.to_release {
                    subs.remove(&shard);
                    let n = router.stop_shard(shard, shards, cfg.drain_timeout).await;
                    if let Err(e) = leases.release(shard).await {
                        tracing::warn!(shard, error = %e, "shard release failed; it expires instead");
                    }
                    tracing::info!(shard, actors = n, "shard handed over");
                }
                m.acquired.inc_by(r.acquired.len() as u64);
                for (shard, token) in r.acquired {
                    match subscribe(bus.as_ref(), shard, tx.clone()).await {
                        Ok(s) => {
                            subs.insert(shard, s);
                            tracing::debug!(shard, token, "shard acquired");
                        }
                        Err(e) => {
                            tracing::warn!(shard, error = %e, "shard subscription failed; releasing it");
                            let _ = leases.release(shard).await;
                        }
                    }
                }
                m.shards.set(i64::try_from(subs.len()).unwrap_or(i64::MAX));
            }
        }
    }
    subs.clear();
    metrics().shards.set(0);
    tracing::info!(actors = router.live_actors(), "hostd draining");
    router.stop_all(cfg.drain_timeout).await;
    leases.release_all().await;
    Ok(())
}

pub(crate) struct Metrics {
    shards: prometheus_client::metrics::gauge::Gauge,
    pub(crate) actors: prometheus_client::metrics::gauge::Gauge,
    pub(crate) hosts_online: prometheus_client::metrics::gauge::Gauge,
    acquired: prometheus_client::metrics::counter::Counter,
    handed_over: prometheus_client::metrics::counter::Counter,
    lost: prometheus_client::metrics::counter::Counter,
}

pub(crate) fn metrics() -> &'static Metrics {
    use gatehouse_runtime::metrics::{counter, gauge};
    static M: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    M.get_or_init(|| Metrics {
        shards: gauge("hostd_shards", "Shards this hostd holds leases for"),
        actors: gauge("hostd_actors", "Host actors alive in this hostd"),
        hosts_online: gauge(
            "hostd_hosts_online",
            "Hosts that made an agent request to this hostd within the online window",
        ),
        acquired: counter("hostd_shards_acquired", "Shard leases acquired"),
        handed_over: counter(
            "hostd_shards_handed_over",
            "Shards handed over to another hostd",
        ),
        lost: counter(
            "hostd_shards_lost",
            "Shards found taken by another hostd (this one stalled past the lease TTL)",
        ),
    })
}

/// Fencing tokens from this instance's shard leases: a host's writes carry
/// its shard's lease revision, and stop (shard moved) once the lease is gone.
pub fn lease_fences(leases: Arc<Leases>, shards: u32) -> crate::actor::FenceFn {
    Arc::new(move |h| {
        leases
            .token(shard_of(h, shards))
            .map(gatehouse_core::ports::Fence)
    })
}

/// Shards this instance serves right now.
pub fn served(leases: &Leases) -> Vec<u32> {
    leases.held().into_keys().collect()
}
