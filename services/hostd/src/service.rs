//! The hostd service: answers host RPCs on the shard subjects, routes each
//! to the host's actor (spawning it on demand), and applies campaign and
//! config broadcasts.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_core::HostId;
use gatehouse_core::nodekey::NodeKeys;
use gatehouse_core::ports::{Bus, BusError, BusMessage, Store};
use gatehouse_proto::topics::{
    CAMPAIGN_CANCELLED, CAMPAIGN_CREATED, CONFIG_CHANGED, HOSTS_CHANGED,
};
use gatehouse_proto::v1::{
    CampaignCreated, FailureKind, HostReply, HostRequest, host_reply, host_request,
};
use gatehouse_runtime::Shutdown;
use prost::Message;

use crate::actor::{ActorSettings, Fail, HostActor, HostCtx, HostMsg, HostRef, Unanswered};
use crate::configs::ConfigCache;
use crate::registry::Registry;
use crate::sharded::{Ownership, Serving};

#[derive(Debug, Clone)]
pub struct HostdConfig {
    pub actors: ActorSettings,
    /// Bound on one actor call (the agent gives up after 16 s).
    pub call_timeout: Duration,
    /// How often to poll the config generation (broadcasts may be missed).
    pub generation_poll: Duration,
    /// Bound on stopping every actor at shutdown.
    pub drain_timeout: Duration,
    /// A host that made an agent request within this counts as online
    /// (`gatehouse_hostd_hosts_online`).
    pub online_window: Duration,
}

impl Default for HostdConfig {
    fn default() -> Self {
        Self {
            actors: ActorSettings::default(),
            call_timeout: Duration::from_secs(10),
            generation_poll: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(15),
            online_window: Duration::from_secs(180),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostdError {
    #[error("bus: {0}")]
    Bus(#[from] BusError),
}

/// Routes requests to host actors.
#[derive(Clone, Debug)]
pub struct Router {
    ctx: Arc<HostCtx>,
    call_timeout: Duration,
    /// When each host last made an agent request here (hosts online).
    seen: Arc<std::sync::Mutex<std::collections::HashMap<HostId, std::time::Instant>>>,
}

fn failure(kind: FailureKind, message: impl Into<String>) -> host_reply::Result {
    Fail::new(kind, message).reply()
}

impl Router {
    pub fn new(ctx: Arc<HostCtx>, call_timeout: Duration) -> Self {
        Self {
            ctx,
            call_timeout,
            seen: Arc::default(),
        }
    }

    pub fn live_actors(&self) -> usize {
        self.ctx.registry.len()
    }

    /// Hosts that made an agent request here within `window` (forgets
    /// the others).
    pub fn hosts_online(&self, window: Duration) -> usize {
        let Ok(mut seen) = self.seen.lock() else {
            return 0;
        };
        seen.retain(|_, t| t.elapsed() < window);
        seen.len()
    }

    fn mark_seen(&self, host: &HostId) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(host.clone(), std::time::Instant::now());
        }
    }

    async fn actor(&self, host: &HostId) -> Result<HostRef, String> {
        let cell = self.ctx.registry.cell(host);
        let ctx = self.ctx.clone();
        let id = host.clone();
        let r = cell
            .get_or_try_init(|| async move {
                // Actors are ticked by their hostd's one ticker.
                crate::actor::start_ticker(&ctx);
                HostActor::spawn(ctx, id)
                    .await
                    .map_err(|e| format!("host actor failed to start: {e}"))
            })
            .await
            .cloned();
        if r.is_err() {
            self.ctx.registry.remove(host, None);
        }
        r
    }

    /// Runs one request on the host's actor. A request that reached a
    /// stopping actor (passivation race) is retried on a fresh one; it was
    /// never processed.
    pub async fn route(&self, req: HostRequest) -> host_reply::Result {
        let Some(host) = HostId::parse(&req.host_id) else {
            return failure(FailureKind::Unsupported, "malformed host id");
        };
        let Some(op) = req.op else {
            return failure(FailureKind::Unsupported, "request without an operation");
        };
        let rekeys = matches!(
            op,
            host_request::Op::Enroll(_)
                | host_request::Op::RotateKey(_)
                | host_request::Op::DeleteHost(_)
        );
        if !matches!(
            op,
            host_request::Op::SetLabels(_) | host_request::Op::RotateKey(_)
        ) {
            self.mark_seen(&host);
        }
        let result = self.run_on_actor(&host, op, req.key_epoch).await;
        if rekeys {
            // The key or the host itself changed: edges that answered its
            // reads and touches ask again (announced before the caller
            // hears the outcome).
            self.announce(std::slice::from_ref(&host), false).await;
        }
        result
    }

    /// Tells every edge that what these hosts' actors would answer their
    /// reads and touches changed (`all`: every host's).
    pub(crate) async fn announce(&self, hosts: &[HostId], all: bool) {
        self.publish_change(gatehouse_proto::v1::HostsChanged {
            host_ids: hosts.iter().map(ToString::to_string).collect(),
            all,
            ..Default::default()
        })
        .await;
    }

    /// Tells every edge that these shards (of `count`) have a new owner
    /// here, whose actors start from the store.
    pub(crate) async fn announce_shards(&self, shards: Vec<u32>, count: u32) {
        self.publish_change(gatehouse_proto::v1::HostsChanged {
            shards,
            shard_count: count,
            ..Default::default()
        })
        .await;
    }

    async fn publish_change(&self, msg: gatehouse_proto::v1::HostsChanged) {
        let Some(bus) = self.ctx.events.get() else {
            return;
        };
        if let Err(e) = gatehouse_bus::events::publish(bus.as_ref(), &HOSTS_CHANGED, &msg).await
            && let Some(like_it) = self.ctx.log_throttle.admit("hosts_changed")
        {
            tracing::warn!(error = %e, left_out_since_last = like_it, "host change not announced; edges ask again within answer_for");
        }
    }

    async fn run_on_actor(
        &self,
        host: &HostId,
        op: host_request::Op,
        key_epoch: u64,
    ) -> host_reply::Result {
        for _attempt in 0..3 {
            let actor = match self.actor(host).await {
                Ok(a) => a,
                Err(e) => return failure(FailureKind::Unavailable, e),
            };
            match actor.call(op.clone(), key_epoch, self.call_timeout).await {
                Ok(r) => return r,
                Err(Unanswered::TimedOut) => {
                    return failure(FailureKind::Unavailable, "host actor timed out");
                }
                Err(Unanswered::Stopped) => {
                    self.ctx.registry.remove(host, Some(actor.id()));
                }
            }
        }
        failure(
            FailureKind::Unavailable,
            "host actor kept stopping, retry later",
        )
    }

    /// Queues the campaign on the live actors of its targets here, then
    /// announces the targets this hostd owns (their actors, live or
    /// started later from the store, now deliver it; a read that reaches
    /// one after the announcement is queued behind the campaign).
    async fn campaign_created(
        &self,
        msg: &CampaignCreated,
        campaign: &Arc<gatehouse_core::model::Campaign>,
        owns: impl Fn(&HostId) -> bool,
    ) {
        let mut owned = Vec::new();
        for h in &msg.host_ids {
            let Some(id) = HostId::parse(h) else { continue };
            if let Some(actor) = self.ctx.registry.get(&id) {
                let _ = actor.send(HostMsg::CampaignQueued(Arc::clone(campaign)));
            }
            if owns(&id) {
                owned.push(id);
            }
        }
        if !owned.is_empty() {
            self.announce(&owned, false).await;
        }
    }

    /// Tells every live actor that a campaign ended (those holding it
    /// stop asking their host).
    pub(crate) fn campaign_cancelled(&self, campaign_id: &str, ended_at: i64) {
        for (_, actor) in self.ctx.registry.hosts() {
            let _ = actor.send(HostMsg::CampaignEnded {
                campaign_id: campaign_id.to_owned(),
                ended_at,
            });
        }
    }

    /// Stops (persisting) the actors whose host is in `shard`.
    pub(crate) async fn stop_shard(&self, shard: u32, shards: u32, timeout: Duration) -> usize {
        let actors: Vec<_> = self
            .ctx
            .registry
            .hosts()
            .into_iter()
            .filter(|(h, _)| gatehouse_core::ids::shard_of(h, shards) == shard)
            .collect();
        let n = actors.len();
        let all = async {
            for (_, a) in actors {
                a.stop_and_wait("shard handed over").await;
            }
        };
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!(shard, actors = n, "shard actors did not all stop in time");
        }
        n
    }

    pub(crate) async fn stop_all(&self, timeout: Duration) {
        let actors = self.ctx.registry.all();
        let n = actors.len();
        let stops = actors.into_iter().map(|a| async move {
            a.stop_and_wait("shutdown").await;
        });
        let all = async {
            for s in stops {
                s.await;
            }
        };
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!(
                actors = n,
                "not every host actor stopped within the drain timeout"
            );
        } else {
            tracing::info!(actors = n, "host actors stopped");
        }
    }
}

/// Builds the shared context for a hostd.
pub fn context(store: Arc<dyn Store>, keys: NodeKeys, settings: ActorSettings) -> Arc<HostCtx> {
    fenced_context(store, keys, settings, crate::actor::unfenced())
}

/// A context whose actors write with the tokens `fences` gives (a sharded
/// hostd: its shard leases).
pub fn fenced_context(
    store: Arc<dyn Store>,
    keys: NodeKeys,
    settings: ActorSettings,
    fences: crate::actor::FenceFn,
) -> Arc<HostCtx> {
    Arc::new(HostCtx {
        configs: ConfigCache::new(store.clone()),
        store,
        keys,
        registry: Registry::default(),
        settings,
        fences,
        events: std::sync::OnceLock::new(),
        log_throttle: gatehouse_runtime::throttle::LogThrottle::new(
            std::time::Duration::from_secs(10),
        ),
        ticking: std::sync::Once::new(),
    })
}

/// Answers a request if `owns` its host; otherwise tells the client the
/// shard moved (it retries, reaching the new owner).
pub(crate) async fn answer_if(router: Router, msg: BusMessage, owns: impl Fn(&HostId) -> bool) {
    let result = match HostRequest::decode(msg.payload.clone()) {
        Ok(req) => match HostId::parse(&req.host_id) {
            Some(h) if !owns(&h) => Fail::moved().reply(),
            _ => router.route(req).await,
        },
        Err(e) => failure(
            FailureKind::Unsupported,
            format!("undecodable host request: {e}"),
        ),
    };
    if let Some(reply) = msg.reply {
        let bytes = Bytes::from(
            HostReply {
                result: Some(result),
            }
            .encode_to_vec(),
        );
        if let Err(e) = reply.reply(bytes).await {
            tracing::debug!(error = %e, "reply not delivered");
        }
    }
}

/// The campaign of the broadcasts applied last: a campaign comes as one
/// broadcast per shard with targets (up to the shard count, 1,024 by
/// default), and hostd reads it from the store once, not once for each
/// (a store read each, in hostd's one loop, delayed the last shards'
/// actors by seconds under a campaign's burst: reads that reached them
/// first left without the query and came back an interval later).
#[derive(Debug, Default)]
pub(crate) struct Recent(Option<Arc<gatehouse_core::model::Campaign>>);

impl Recent {
    /// Forgets `campaign_id` (cancelled: a broadcast after that reads the
    /// store again).
    pub(crate) fn forget(&mut self, campaign_id: &str) {
        if self.0.as_ref().is_some_and(|c| c.id == campaign_id) {
            self.0 = None;
        }
    }
}

pub(crate) async fn on_campaign(
    ctx: &HostCtx,
    router: &Router,
    recent: &mut Recent,
    m: BusMessage,
    owns: impl Fn(&HostId) -> bool,
) {
    let c = match CAMPAIGN_CREATED.decode(m.payload) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable campaign broadcast");
            return;
        }
    };
    let campaign = match &recent.0 {
        Some(known) if known.id == c.campaign_id => known.clone(),
        _ => match ctx.store.get_campaign(&c.campaign_id).await {
            Ok(Some(campaign)) => {
                let campaign = Arc::new(campaign);
                recent.0 = Some(campaign.clone());
                campaign
            }
            Ok(None) => {
                tracing::warn!(campaign = %c.campaign_id, "broadcast for an unknown campaign");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "campaign lookup failed");
                return;
            }
        },
    };
    router.campaign_created(&c, &campaign, owns).await;
}

/// Applies a config generation broadcast; the label queries may have
/// changed, so every edge asks the actors again.
pub(crate) async fn on_config(ctx: &HostCtx, router: &Router, m: BusMessage) {
    match CONFIG_CHANGED.decode(m.payload) {
        Ok(c) => {
            if ctx.configs.observe(c.generation) {
                router.announce(&[], true).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "undecodable config broadcast"),
    }
}

/// This process's hostd as its own edge and api reach it, without the bus
/// (ADR 0054): it answers while `run` serves every shard (the all-in-one)
/// and gives requests back before and after, and always for a hostd whose
/// shards are leased (they move between processes; the bus finds their
/// owner).
#[derive(Clone, Default)]
pub struct LocalRoute {
    router: Arc<std::sync::OnceLock<Router>>,
    open: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for LocalRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRoute")
            .field("open", &self.is_open())
            .finish()
    }
}

impl LocalRoute {
    fn is_open(&self) -> bool {
        self.open.load(std::sync::atomic::Ordering::Acquire)
    }

    fn open(&self, router: &Router) {
        let _ = self.router.set(router.clone());
        self.open.store(true, std::sync::atomic::Ordering::Release);
    }

    fn close(&self) {
        self.open.store(false, std::sync::atomic::Ordering::Release);
    }
}

#[async_trait::async_trait]
impl gatehouse_bus::hostrpc::LocalHosts for LocalRoute {
    async fn route(&self, req: HostRequest) -> Result<host_reply::Result, HostRequest> {
        match self.router.get() {
            Some(router) if self.is_open() => Ok(router.route(req).await),
            _ => Err(req),
        }
    }
}

/// What a hostd runs over: its actors' context, the bus it answers on and
/// which shards it serves.
pub struct HostdDeps {
    pub ctx: Arc<HostCtx>,
    pub bus: Arc<dyn Bus>,
    pub ownership: Ownership,
    /// Hands every shard over early and leaves the ring while the process
    /// stays up (the control service's Drain; a leased hostd only).
    pub drain: Shutdown,
    pub metrics: gatehouse_runtime::metrics::Metrics,
    /// The in-process route to this hostd, opened by `run` when it serves
    /// every shard.
    pub local: LocalRoute,
}

impl HostdDeps {
    /// The context's fences follow `ownership`: unfenced when serving every
    /// shard, the lease tokens when leased.
    pub fn new(
        store: Arc<dyn Store>,
        keys: NodeKeys,
        settings: ActorSettings,
        bus: Arc<dyn Bus>,
        ownership: Ownership,
        metrics: gatehouse_runtime::metrics::Metrics,
    ) -> Self {
        Self {
            ctx: fenced_context(store, keys, settings, ownership.fences()),
            bus,
            ownership,
            drain: Shutdown::new(),
            metrics,
            local: LocalRoute::default(),
        }
    }
}

/// Runs hostd until `shutdown`: answers host RPCs for the shards it serves
/// and applies campaign and config broadcasts; then stops every actor
/// (each persists its state) and hands its shards over.
pub async fn run(cfg: HostdConfig, deps: HostdDeps, shutdown: Shutdown) -> Result<(), HostdError> {
    let HostdDeps {
        ctx,
        bus,
        ownership,
        drain,
        metrics,
        local,
    } = deps;
    let metrics = Arc::new(crate::sharded::Metrics::new(&metrics));
    let _ = ctx.events.set(bus.clone());
    let router = Router::new(ctx.clone(), cfg.call_timeout);
    let mut campaigns = bus.subscribe(CAMPAIGN_CREATED.subject(), None).await?;
    let mut configs = bus.subscribe(CONFIG_CHANGED.subject(), None).await?;
    let mut cancelled = bus.subscribe(CAMPAIGN_CANCELLED.subject(), None).await?;
    let (mut serving, mut requests) =
        Serving::start(ownership, bus, cfg.drain_timeout, metrics.clone()).await?;
    if let Err(e) = ctx.configs.refresh_generation().await {
        tracing::warn!(error = %e, "config generation not readable yet");
    }
    let leased = serving.round_every();
    if leased.is_none() {
        local.open(&router);
    }
    let mut poll = tokio::time::interval(cfg.generation_poll);
    let mut round = tokio::time::interval(leased.unwrap_or(cfg.generation_poll));
    let mut drained = false;
    let mut recent = Recent::default();
    let gauges = |router: &Router| {
        let m = &metrics;
        m.actors
            .set(i64::try_from(router.live_actors()).unwrap_or(i64::MAX));
        m.hosts_online
            .set(i64::try_from(router.hosts_online(cfg.online_window)).unwrap_or(i64::MAX));
    };
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = drain.wait(), if leased.is_some() && !drained => {
                drained = true;
                tracing::info!("draining: handing every shard over");
                serving.hand_over_all(&router).await;
                tracing::info!("drained: out of the shard ring until stopped");
            },
            m = requests.recv() => match m {
                Some(m) => {
                    let (router, owner) = (router.clone(), serving.ownership().clone());
                    tokio::spawn(async move { answer_if(router, m, |h| owner.owns(h)).await });
                }
                None => break,
            },
            m = campaigns.next() => if let Some(m) = m {
                let owner = serving.ownership().clone();
                on_campaign(&ctx, &router, &mut recent, m, |h| owner.owns(h)).await;
            },
            m = configs.next() => if let Some(m) = m {
                on_config(&ctx, &router, m).await;
            },
            m = cancelled.next() => if let Some(m) = m {
                match CAMPAIGN_CANCELLED.decode(m.payload) {
                    Ok(c) => {
                        recent.forget(&c.campaign_id);
                        router.campaign_cancelled(&c.campaign_id, c.ended_at);
                    }
                    Err(e) => tracing::warn!(error = %e, "undecodable cancellation broadcast"),
                }
            },
            _ = poll.tick() => {
                gauges(&router);
                match ctx.configs.refresh_generation().await {
                    // A broadcast was missed: edges ask the actors again too.
                    Ok(true) => router.announce(&[], true).await,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "config generation poll failed"),
                }
            },
            _ = round.tick(), if leased.is_some() && !drained => {
                gauges(&router);
                serving.round(&router).await;
            }
        }
    }
    local.close();
    serving.hand_over_all(&router).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::model::{Campaign, DeliveryState, Targets};
    use gatehouse_proto::v1::{EnrollOp, QueryResult, ReadOp, WriteOp};

    /// A router over a fresh embedded store (kept alive by the directory).
    fn router() -> (tempfile::TempDir, Arc<dyn Store>, Arc<HostCtx>, Router) {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("temporary directory: {e}"),
        };
        let store: Arc<dyn Store> = match gatehouse_store::EmbeddedStore::open(dir.path()) {
            Ok(s) => Arc::new(s),
            Err(e) => panic!("opening the store: {e}"),
        };
        let ctx = crate::service::context(
            store.clone(),
            NodeKeys::new(b"0123456789abcdef0123456789abcdef"),
            crate::actor::ActorSettings::default(),
        );
        let router = Router::new(ctx.clone(), Duration::from_secs(5));
        (dir, store, ctx, router)
    }

    /// Enrolls `identity` through `router`: its host id and key epoch.
    async fn enrolled(router: &Router, identity: &str) -> (HostId, u64) {
        let host = HostId::from_identity(identity);
        let enroll = host_request::Op::Enroll(EnrollOp {
            identity: identity.into(),
            host_identifier: identity.into(),
            platform_type: "9".into(),
            host_details_json: Bytes::from_static(b"{}"),
            remote_addr: "10.0.0.1".into(),
            labels: vec![],
        });
        match router.route(HostRequest::new(&host, 0, enroll)).await {
            host_reply::Result::Enrolled(k) => (host, k.epoch),
            other => panic!("enroll failed: {other:?}"),
        }
    }

    /// A campaign is queued on a live actor from the broadcast alone (no
    /// store read per target): delivered once, answered once, and a
    /// broadcast that arrives again after the answer does not send the
    /// query again: the stored delivery is final and stays so.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_campaign_queued_again_after_its_answer_is_not_sent_again() {
        let (_dir, store, _ctx, router) = router();
        let (host, epoch) = enrolled(&router, "hw:campaign-test").await;
        let read = async || match router
            .route(HostRequest::new(
                &host,
                epoch,
                host_request::Op::Read(ReadOp {}),
            ))
            .await
        {
            host_reply::Result::Read(r) => r.queries,
            other => panic!("read failed: {other:?}"),
        };
        assert!(read().await.is_empty(), "nothing queued yet");

        let now = gatehouse_core::time::now_ms();
        let campaign = Campaign {
            id: "c1".into(),
            sql: "SELECT 1".into(),
            targets: Targets {
                hosts: vec![host.clone()],
                labels: vec![],
                all: false,
            },
            target_count: 1,
            created_at: now,
            expires_at: now + 3_600_000,
            created_by: "test".into(),
            cancelled_at: None,
            cancelled_by: None,
        };
        store
            .create_campaign(&campaign, std::slice::from_ref(&host))
            .await
            .unwrap();
        let broadcast = CampaignCreated {
            campaign_id: "c1".into(),
            host_ids: vec![host.to_string()],
        };
        let shared = Arc::new(campaign.clone());
        router.campaign_created(&broadcast, &shared, |_| true).await;
        let sent = read().await;
        assert_eq!(sent.get("c1").map(String::as_str), Some("SELECT 1"));
        let answer = host_request::Op::Write(WriteOp {
            results: vec![QueryResult {
                query_id: "c1".into(),
                rows_json: b"[{\"1\":\"1\"}]".to_vec().into(),
                status: 0,
                message: String::new(),
                stats_json: b"{}".to_vec().into(),
            }],
        });
        assert!(matches!(
            router.route(HostRequest::new(&host, epoch, answer)).await,
            host_reply::Result::Ok(_)
        ));

        // The same broadcast again, after the answer.
        router.campaign_created(&broadcast, &shared, |_| true).await;
        assert!(read().await.is_empty(), "not sent again");
        let d = store.get_delivery("c1", &host).await.unwrap().unwrap();
        assert_eq!(d.state, DeliveryState::Answered);
        assert_eq!(d.delivery_count, 1);
        assert_eq!(store.list_results("c1").await.unwrap().len(), 1);
    }

    /// A campaign's broadcasts (one per shard with targets) queue it on
    /// the actors of every shard's targets, from one store read: the
    /// campaign read for the first is kept for the next, until it is
    /// cancelled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_broadcast_of_a_campaign_queues_it_from_one_read() {
        let (_dir, store, ctx, router) = router();
        let mut hosts = Vec::new();
        for name in ["hw:shard-a", "hw:shard-b"] {
            hosts.push(enrolled(&router, name).await);
        }
        let now = gatehouse_core::time::now_ms();
        let targets: Vec<HostId> = hosts.iter().map(|(h, _)| h.clone()).collect();
        let campaign = Campaign {
            id: "c-shards".into(),
            sql: "SELECT 2".into(),
            targets: Targets {
                hosts: targets.clone(),
                labels: vec![],
                all: false,
            },
            target_count: 2,
            created_at: now,
            expires_at: now + 3_600_000,
            created_by: "test".into(),
            cancelled_at: None,
            cancelled_by: None,
        };
        store.create_campaign(&campaign, &targets).await.unwrap();
        let mut recent = Recent::default();
        for (host, _) in &hosts {
            let m = BusMessage {
                subject: CAMPAIGN_CREATED.subject().to_owned(),
                payload: CAMPAIGN_CREATED.encode(&CampaignCreated {
                    campaign_id: "c-shards".into(),
                    host_ids: vec![host.to_string()],
                }),
                reply: None,
            };
            on_campaign(&ctx, &router, &mut recent, m, |_| true).await;
            let kept = recent.0.clone().expect("the campaign is kept");
            assert_eq!(kept.id, "c-shards");
        }
        for (host, epoch) in &hosts {
            match router
                .route(HostRequest::new(
                    host,
                    *epoch,
                    host_request::Op::Read(ReadOp {}),
                ))
                .await
            {
                host_reply::Result::Read(r) => {
                    assert_eq!(
                        r.queries.get("c-shards").map(String::as_str),
                        Some("SELECT 2")
                    );
                }
                other => panic!("read failed: {other:?}"),
            }
        }
        recent.forget("another");
        assert!(recent.0.is_some(), "another campaign's end keeps it");
        recent.forget("c-shards");
        assert!(recent.0.is_none(), "its own end forgets it");
    }
}
