//! The set of running destinations ([`Supervisor`]) and the operators'
//! handle on it ([`Handle`], the API's `Destinations` port).
//!
//! Destinations come from the configuration file (fixed while the process
//! runs) and from the API (kept as settings beside the forward log, under
//! `dest/<name>`). Beside them, per destination: `paused/<name>` (an
//! operator paused it: kept across restarts), `replay/<name>` (a replay
//! asked from another process, applied once) and `state/<name>` (its state,
//! published for other processes when the forwarders run elsewhere, as in
//! a cluster). The supervisor reconciles every [`RECONCILE_EVERY`], and at
//! once when the handle in its own process changes something: it starts
//! destinations that appeared, stops those removed, restarts those
//! redefined (the old one finishes its batch in flight first: its cursor
//! is where the new one starts).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_bus::leases::{LeaseStore, Renewal};
use gatehouse_core::model::DestinationState;
use gatehouse_core::ports::{
    DestinationError, Destinations, ForwardCursor, ForwardError, ForwardLog, ReplayFrom,
};
use gatehouse_core::time::Clock;
use gatehouse_runtime::Shutdown;

use crate::runner::Control;
use crate::{DestinationConfig, Services};

/// How often the supervisor looks at the settings.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(2);
/// How long a stopped destination may take to finish its batch in flight.
const STOP_WITHIN: Duration = Duration::from_secs(30);

const DEST: &str = "dest/";
const PAUSED: &str = "paused/";
const REPLAY: &str = "replay/";
const STATE: &str = "state/";

/// What a destination's definition says of its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Config,
    Api,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Api => "api",
        }
    }
}

/// Keys of a destination's definition whose values are secrets.
const SECRET_KEYS: [&str; 4] = ["token", "password", "api_key", "secret"];

/// A definition as operators see it: secrets (and webhook header values)
/// replaced by `"<redacted>"`, unset options left out.
pub fn redacted(d: &DestinationConfig) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        if let serde_json::Value::Object(m) = v {
            // Kinds not given and options left unset say nothing.
            m.retain(|_, v| !v.is_null());
            for (k, v) in m.iter_mut() {
                if (SECRET_KEYS.contains(&k.as_str()) && !v.is_null())
                    || (k == "headers" && v.is_object())
                {
                    if let serde_json::Value::Object(h) = v {
                        for hv in h.values_mut() {
                            *hv = "<redacted>".into();
                        }
                    } else {
                        *v = "<redacted>".into();
                    }
                } else {
                    walk(v);
                }
            }
        }
    }
    let mut v = serde_json::to_value(d).unwrap_or_default();
    walk(&mut v);
    v
}

/// One destination the supervisor runs (or could not start).
struct Slot {
    config: DestinationConfig,
    source: Source,
    /// `None`: it could not be started (`error` says why).
    running: Option<Running>,
    error: Option<String>,
}

struct Running {
    control: Arc<Control>,
    stop: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl Slot {
    fn listed(&self) -> Listed {
        let mut base = DestinationState {
            name: self.config.name.clone(),
            kind: self.config.kind().unwrap_or_default().to_owned(),
            last_error: self.error.clone(),
            ..DestinationState::default()
        };
        base.source = self.source.as_str().to_owned();
        base.config = Some(redacted(&self.config));
        Listed {
            control: self.running.as_ref().map(|r| r.control.clone()),
            base,
        }
    }
}

/// One destination as operators see it: live from its control when it
/// runs.
#[derive(Clone)]
struct Listed {
    control: Option<Arc<Control>>,
    base: DestinationState,
}

impl Listed {
    fn state(&self) -> DestinationState {
        match &self.control {
            Some(c) => DestinationState {
                source: self.base.source.clone(),
                config: self.base.config.clone(),
                ..c.state()
            },
            None => self.base.clone(),
        }
    }
}

struct Inner {
    fixed: Vec<DestinationConfig>,
    log: Arc<dyn ForwardLog>,
    services: Services,
    clock: Arc<dyn Clock>,
    metrics: gatehouse_runtime::metrics::Metrics,
    /// Publish states as settings (another process serves the API).
    publish: bool,
    /// When this supervisor was made: the configuration file's
    /// destinations are defined since then.
    started_ms: i64,
    slots: tokio::sync::Mutex<BTreeMap<String, Slot>>,
    /// What operators see, updated by each reconcile (never waits on
    /// one).
    listed: Mutex<Vec<Listed>>,
    /// Whether any destination is defined (appending to the forward log
    /// is skipped while none is).
    any: Arc<AtomicBool>,
    poke: tokio::sync::Notify,
    /// Every forwarder task started, to end them with the task that runs
    /// the supervisor (an in-process "crash" ends them all, as a real one
    /// would).
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// Ends every forwarder when dropped (its [`Supervisor::run`] ended or was
/// cancelled).
struct AbortOnDrop<'a>(&'a Inner);

impl Drop for AbortOnDrop<'_> {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.0.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }
}

/// Runs the destinations defined in the configuration file and through
/// the API.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("fixed", &self.inner.fixed.len())
            .finish()
    }
}

/// Parses a stored definition.
fn parse(name: &str, v: &[u8]) -> Result<DestinationConfig, String> {
    let d: DestinationConfig = serde_json::from_slice(v).map_err(|e| e.to_string())?;
    if d.name != name {
        return Err(format!("stored under {name:?} but named {:?}", d.name));
    }
    d.validate()?;
    Ok(d)
}

fn encode_cursor(c: ForwardCursor) -> Bytes {
    Bytes::from(format!("{} {}", c.seq, c.line))
}

fn decode_cursor(v: &[u8]) -> Option<ForwardCursor> {
    let (a, b) = std::str::from_utf8(v).ok()?.split_once(' ')?;
    Some(ForwardCursor {
        seq: a.parse().ok()?,
        line: b.parse().ok()?,
    })
}

fn strip<'a>(prefix: &str, k: &'a str) -> &'a str {
    k.strip_prefix(prefix).unwrap_or(k)
}

impl Supervisor {
    /// `fixed`: the configuration file's destinations (checked already);
    /// `publish`: write each destination's state as a setting for the API
    /// of other processes.
    pub fn new(
        fixed: Vec<DestinationConfig>,
        log: Arc<dyn ForwardLog>,
        services: Services,
        clock: Arc<dyn Clock>,
        metrics: &gatehouse_runtime::metrics::Metrics,
        publish: bool,
        any: Arc<AtomicBool>,
    ) -> Result<Self, String> {
        crate::validate(&fixed)?;
        any.store(!fixed.is_empty(), Ordering::Relaxed);
        Ok(Self {
            inner: Arc::new(Inner {
                fixed,
                log,
                services,
                clock: clock.clone(),
                metrics: metrics.clone(),
                publish,
                started_ms: clock.now_ms(),
                slots: tokio::sync::Mutex::new(BTreeMap::new()),
                listed: Mutex::new(Vec::new()),
                any,
                poke: tokio::sync::Notify::new(),
                tasks: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Whether any destination is defined, looked up again (for a process
    /// that does not run them but appends for them).
    async fn refresh_defined(&self) {
        refresh_defined(
            &self.inner.log,
            &self.inner.any,
            !self.inner.fixed.is_empty(),
        )
        .await;
    }

    /// The operators' handle, acting on this supervisor directly.
    pub fn handle(&self) -> Handle {
        Handle {
            log: self.inner.log.clone(),
            local: Some(self.clone()),
            file_root: None,
        }
    }

    fn listed(&self, name: Option<&str>) -> Vec<Listed> {
        self.inner
            .listed
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|d| name.is_none_or(|n| d.base.name == n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn states(&self) -> Vec<DestinationState> {
        self.listed(None).iter().map(Listed::state).collect()
    }

    fn control(&self, name: &str) -> Option<Arc<Control>> {
        self.listed(Some(name)).pop().and_then(|l| l.control)
    }

    fn state_of(&self, name: &str) -> Option<DestinationState> {
        self.listed(Some(name)).pop().map(|l| l.state())
    }

    fn is_fixed(&self, name: &str) -> bool {
        self.inner.fixed.iter().any(|d| d.name == name)
    }

    /// Brings the running set in line with the definitions and applies
    /// pause flags and pending replays.
    pub async fn reconcile(&self) -> Result<(), ForwardError> {
        let log = &self.inner.log;
        let mut wanted: BTreeMap<String, (DestinationConfig, Source)> = self
            .inner
            .fixed
            .iter()
            .map(|d| (d.name.clone(), (d.clone(), Source::Config)))
            .collect();
        for (k, v) in log.settings(DEST).await? {
            let name = strip(DEST, &k).to_owned();
            if wanted.contains_key(&name) {
                // The configuration file's wins.
                continue;
            }
            match parse(&name, &v) {
                Ok(d) => {
                    wanted.insert(name, (d, Source::Api));
                }
                Err(e) => {
                    tracing::error!(destination = %name, error = %e, "a stored destination is invalid; not started");
                }
            }
        }
        let paused: BTreeSet<String> = log
            .settings(PAUSED)
            .await?
            .into_iter()
            .map(|(k, _)| strip(PAUSED, &k).to_owned())
            .collect();
        let replays = log.settings(REPLAY).await?;
        let mut slots = self.inner.slots.lock().await;
        // Stop what is gone or redefined.
        let stale: Vec<String> = slots
            .iter()
            .filter(|(n, s)| {
                wanted
                    .get(*n)
                    .is_none_or(|(d, src)| *d != s.config || *src != s.source)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in stale {
            if let Some(slot) = slots.remove(&name) {
                if let Some(r) = slot.running {
                    r.stop.trigger();
                    let mut task = r.task;
                    if tokio::time::timeout(STOP_WITHIN, &mut task).await.is_err() {
                        task.abort();
                    }
                }
                tracing::info!(destination = %name, "destination stopped");
            }
            if self.inner.publish && !wanted.contains_key(&name) {
                log.put_setting(&format!("{STATE}{name}"), None).await?;
            }
        }
        // Start what is new (or could not start before).
        for (name, (d, source)) in wanted {
            let retry = slots.get(&name).is_some_and(|s| s.running.is_none());
            if slots.contains_key(&name) && !retry {
                continue;
            }
            let slot = match d.forwarder(
                log.clone(),
                self.inner.services.clone(),
                self.inner.clock.clone(),
                &self.inner.metrics,
                // The API's have their first cursor saved when defined.
                (source == Source::Config).then_some(self.inner.started_ms),
            ) {
                Ok(f) => {
                    let control = f.control();
                    // Paused before it runs: not one batch goes out first.
                    if paused.contains(&name) {
                        control.set_paused(true);
                    }
                    let stop = Shutdown::new();
                    let task = tokio::spawn(f.run(stop.clone()));
                    if let Ok(mut all) = self.inner.tasks.lock() {
                        all.retain(|t| !t.is_finished());
                        all.push(task.abort_handle());
                    }
                    if retry {
                        tracing::info!(destination = %name, "destination started");
                    }
                    Slot {
                        config: d,
                        source,
                        running: Some(Running {
                            control,
                            stop,
                            task,
                        }),
                        error: None,
                    }
                }
                Err(e) => {
                    if !retry {
                        tracing::error!(destination = %name, error = %e, "destination cannot start; retried every 2 s");
                    }
                    Slot {
                        config: d,
                        source,
                        running: None,
                        error: Some(format!("cannot start: {e}")),
                    }
                }
            };
            slots.insert(name, slot);
        }
        for (name, slot) in slots.iter() {
            if let Some(r) = &slot.running {
                let p = paused.contains(name);
                if r.control.state().paused != p {
                    r.control.set_paused(p);
                }
            }
        }
        for (k, v) in replays {
            let name = strip(REPLAY, &k);
            if let (Some(c), Some(Some(r))) = (
                decode_cursor(&v),
                slots.get(name).map(|s| s.running.as_ref()),
            ) {
                r.control.replay(c);
            }
            log.put_setting(&k, None).await?;
        }
        let listed: Vec<Listed> = slots.values().map(Slot::listed).collect();
        self.inner.any.store(!slots.is_empty(), Ordering::Relaxed);
        drop(slots);
        if let Ok(mut all) = self.inner.listed.lock() {
            all.clone_from(&listed);
        }
        if self.inner.publish {
            for l in &listed {
                let s = l.state();
                let v = serde_json::to_vec(&s).unwrap_or_default();
                log.put_setting(&format!("{STATE}{}", s.name), Some(v.into()))
                    .await?;
            }
        }
        Ok(())
    }

    /// Reconciles until `shutdown`, then stops every destination (each
    /// finishes its batch in flight).
    pub async fn run(self, shutdown: Shutdown) {
        let _end = AbortOnDrop(&self.inner);
        let mut failing = false;
        while !shutdown.is_triggered() {
            match self.reconcile().await {
                Ok(()) if failing => {
                    tracing::info!("destinations: settings readable again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "destinations: reading their settings failed; running ones go on");
                    }
                    failing = true;
                }
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = self.inner.poke.notified() => {}
                _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            }
        }
        let slots = std::mem::take(&mut *self.inner.slots.lock().await);
        for r in slots.values().filter_map(|s| s.running.as_ref()) {
            r.stop.trigger();
        }
        for (_, s) in slots {
            if let Some(r) = s.running {
                let _ = r.task.await;
            }
        }
    }
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// Sets `any` to whether a destination is defined (`fixed`: the
/// configuration file defines some).
async fn refresh_defined(log: &Arc<dyn ForwardLog>, any: &AtomicBool, fixed: bool) {
    if fixed {
        any.store(true, Ordering::Relaxed);
        return;
    }
    if let Ok(defs) = log.settings(DEST).await {
        any.store(!defs.is_empty(), Ordering::Relaxed);
    }
}

/// Keeps `forward.active` up to date every [`RECONCILE_EVERY`] until
/// `shutdown`, for a process that appends to the forward log (the
/// cluster's api, with the audit log) but runs no supervisor.
pub async fn keep_active(
    forward: gatehouse_core::ports::Forwarding,
    fixed: bool,
    shutdown: Shutdown,
) {
    while !shutdown.is_triggered() {
        refresh_defined(&forward.log, &forward.active, fixed).await;
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
        }
    }
}

/// The lease (in the shard-lease bucket) whose holder runs a cluster's
/// destinations: one forwarder per destination in the whole cluster.
pub const FORWARD_LEASE: u32 = u32::MAX;

impl Supervisor {
    /// Runs the destinations while this process holds the forward lease
    /// (`ttl`: the lease bucket's; renewed every third of it), and
    /// otherwise keeps looking whether any is defined, until `shutdown`.
    /// A holder that loses the lease stops its destinations (each
    /// finishes its batch in flight): the next holder goes on from their
    /// cursors, so a takeover can deliver one batch per destination twice.
    pub async fn run_leased(
        self,
        leases: Arc<dyn LeaseStore>,
        holder: String,
        ttl: Duration,
        shutdown: Shutdown,
    ) {
        let every = (ttl / 3).max(Duration::from_millis(100));
        let mut failing = false;
        while !shutdown.is_triggered() {
            match leases.acquire(FORWARD_LEASE, &holder).await {
                Ok(Some(mut token)) => {
                    failing = false;
                    tracing::info!(%holder, "holding the forward lease: running the log destinations");
                    let stop = Shutdown::new();
                    let task = tokio::spawn(self.clone().run(stop.clone()));
                    // Cancelled (the process "crashed"): its destinations end too.
                    let _abort = task.abort_handle();
                    let _end = scopeguard(move || _abort.abort());
                    loop {
                        tokio::select! {
                            _ = shutdown.wait() => {
                                stop.trigger();
                                let _ = task.await;
                                let _ = leases.release(FORWARD_LEASE, token).await;
                                return;
                            }
                            _ = tokio::time::sleep(every) => {}
                        }
                        match leases.renew(FORWARD_LEASE, &holder, token).await {
                            Ok(Renewal::Renewed(t)) => token = t,
                            outcome => {
                                tracing::warn!(%holder, ?outcome, "the forward lease is lost: stopping the log destinations here");
                                stop.trigger();
                                let _ = task.await;
                                break;
                            }
                        }
                    }
                }
                Ok(None) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "the forward lease cannot be read; trying again");
                    }
                    failing = true;
                }
            }
            self.refresh_defined().await;
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// The operators' handle on the destinations: on the supervisor itself
/// when it runs in this process, or through the forward log's settings
/// when it runs in another (the cluster's api).
#[derive(Clone)]
pub struct Handle {
    log: Arc<dyn ForwardLog>,
    local: Option<Supervisor>,
    /// Where file destinations defined through the API write (their `dir`
    /// is taken relative to it); `None`: file destinations cannot be
    /// defined through the API here.
    file_root: Option<PathBuf>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("local", &self.local.is_some())
            .finish()
    }
}

/// `dir` of a file destination defined through the API, under `root`.
fn under_root(root: &Path, dir: &Path) -> Result<PathBuf, String> {
    let plain = dir
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !plain || dir.as_os_str().is_empty() {
        return Err(format!(
            "file.dir {:?}: through the API, a relative directory without `..` (it is created under {})",
            dir.display(),
            root.display()
        ));
    }
    Ok(root.join(dir))
}

impl Handle {
    /// A handle over the settings of `log`, for a process where the
    /// forwarders do not run.
    pub fn remote(log: Arc<dyn ForwardLog>) -> Self {
        Self {
            log,
            local: None,
            file_root: None,
        }
    }

    /// File destinations defined through the API write under `root`.
    pub fn with_file_root(mut self, root: PathBuf) -> Self {
        self.file_root = Some(root);
        self
    }

    async fn reconcile_now(&self) -> Result<(), ForwardError> {
        if let Some(s) = &self.local {
            s.reconcile().await?;
        }
        Ok(())
    }

    async fn find(&self, name: &str) -> Result<DestinationState, DestinationError> {
        let found = match &self.local {
            Some(s) => s.state_of(name),
            None => match self.log.setting(&format!("{STATE}{name}")).await? {
                Some(v) => serde_json::from_slice(&v).ok(),
                None => None,
            },
        };
        found.ok_or_else(|| DestinationError::NotFound(name.to_owned()))
    }

    /// Refuses changes to the configuration file's destinations.
    async fn defined_by_api(&self, name: &str) -> Result<(), DestinationError> {
        let fixed = match &self.local {
            Some(s) => s.is_fixed(name),
            None => self
                .find(name)
                .await
                .is_ok_and(|s| s.source == Source::Config.as_str()),
        };
        if fixed {
            return Err(DestinationError::Conflict(format!(
                "destination {name} is defined in the configuration file: change it there"
            )));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Destinations for Handle {
    async fn list(&self) -> Result<Vec<DestinationState>, ForwardError> {
        if let Some(s) = &self.local {
            return Ok(s.states());
        }
        let mut out = Vec::new();
        for (_, v) in self.log.settings(STATE).await? {
            if let Ok(s) = serde_json::from_slice::<DestinationState>(&v) {
                out.push(s);
            }
        }
        Ok(out)
    }

    async fn set_paused(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<DestinationState, DestinationError> {
        let mut state = self.find(name).await?;
        let key = format!("{PAUSED}{name}");
        self.log
            .put_setting(&key, paused.then(|| Bytes::from_static(b"1")))
            .await?;
        match &self.local {
            Some(s) => {
                if let Some(c) = s.control(name) {
                    c.set_paused(paused);
                }
                self.find(name).await
            }
            None => {
                state.paused = paused;
                Ok(state)
            }
        }
    }

    async fn replay(
        &self,
        name: &str,
        from: ReplayFrom,
    ) -> Result<DestinationState, DestinationError> {
        let mut state = self.find(name).await?;
        let cursor = match from {
            ReplayFrom::Oldest => self.log.bounds().await?.oldest(),
            ReplayFrom::Time(at) => self.log.seek(at).await?,
        };
        match &self.local {
            Some(s) => {
                if let Some(c) = s.control(name) {
                    c.replay(cursor);
                }
                self.find(name).await
            }
            None => {
                self.log
                    .put_setting(&format!("{REPLAY}{name}"), Some(encode_cursor(cursor)))
                    .await?;
                state.cursor = cursor.seq;
                Ok(state)
            }
        }
    }

    async fn put(
        &self,
        name: &str,
        config: serde_json::Value,
    ) -> Result<DestinationState, DestinationError> {
        let invalid = DestinationError::Invalid;
        let mut config = match config {
            serde_json::Value::Object(m) => m,
            _ => return Err(invalid("a destination is a JSON object".into())),
        };
        match config.get("name") {
            None => {
                config.insert("name".into(), name.into());
            }
            Some(n) if n == name => {}
            Some(n) => {
                return Err(invalid(format!(
                    "name {n}: differs from the destination's name in the path ({name})"
                )));
            }
        }
        let mut d: DestinationConfig = serde_json::from_value(config.into())
            .map_err(|e| invalid(format!("destination {name:?}: {e}")))?;
        d.validate().map_err(invalid)?;
        d.for_api().map_err(invalid)?;
        if let Some(f) = &mut d.file {
            let Some(root) = &self.file_root else {
                return Err(invalid(
                    "file: file destinations are defined in the configuration file of the process that forwards".into(),
                ));
            };
            f.dir = under_root(root, &f.dir).map_err(invalid)?;
        }
        self.defined_by_api(name).await?;
        let key = format!("{DEST}{name}");
        if self.log.setting(&key).await?.is_none() {
            // New (not a redefinition, which goes on from its cursor): it
            // starts now or at the oldest line, whenever it first runs.
            let b = self.log.bounds().await?;
            let first = match d.start {
                crate::runner::Start::Now => b.newest(),
                crate::runner::Start::Oldest => b.oldest(),
            };
            self.log.set_cursor(name, first).await?;
        }
        let v = serde_json::to_vec(&d).map_err(|e| invalid(e.to_string()))?;
        self.log.put_setting(&key, Some(v.into())).await?;
        self.reconcile_now().await?;
        match self.find(name).await {
            Ok(s) => Ok(s),
            // Started by the forwarding process at its next look.
            Err(_) => Ok(DestinationState {
                name: name.to_owned(),
                kind: d.kind().unwrap_or_default().to_owned(),
                source: Source::Api.as_str().to_owned(),
                config: Some(redacted(&d)),
                ..DestinationState::default()
            }),
        }
    }

    async fn delete(&self, name: &str) -> Result<(), DestinationError> {
        self.defined_by_api(name).await?;
        let key = format!("{DEST}{name}");
        if self.log.setting(&key).await?.is_none() {
            return Err(DestinationError::NotFound(name.to_owned()));
        }
        self.log.put_setting(&key, None).await?;
        self.log
            .put_setting(&format!("{PAUSED}{name}"), None)
            .await?;
        self.reconcile_now().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::time::ShiftedClock;
    use serde_json::json;

    fn supervisor(dir: &Path, fixed: Vec<DestinationConfig>) -> Supervisor {
        let clock = Arc::new(ShiftedClock::new());
        let log = crate::log::EmbeddedForwardLog::open(
            &dir.join("forward"),
            crate::log::Retention::default(),
            clock.clone(),
        )
        .expect("open");
        Supervisor::new(
            fixed,
            Arc::new(log),
            Services::default(),
            clock,
            &gatehouse_runtime::metrics::Metrics::new(),
            false,
            Arc::new(AtomicBool::new(false)),
        )
        .expect("supervisor")
    }

    fn file_dest(name: &str, dir: &Path) -> DestinationConfig {
        serde_json::from_value(json!({"name": name, "file": {"dir": dir}})).expect("config")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn destinations_defined_through_the_api_start_stop_and_keep_their_pause() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixed = file_dest("files", &dir.path().join("fixed"));
        let sup = supervisor(dir.path(), vec![fixed]);
        let stop = Shutdown::new();
        let task = tokio::spawn(sup.clone().run(stop.clone()));
        let h = sup.handle().with_file_root(dir.path().join("api"));
        // The configuration file's: listed, not changeable here.
        let e = h
            .put("files", json!({"file": {"dir": "x"}}))
            .await
            .unwrap_err();
        assert!(matches!(e, DestinationError::Conflict(_)), "{e:?}");
        assert!(matches!(
            h.delete("files").await.unwrap_err(),
            DestinationError::Conflict(_)
        ));
        // Bad definitions name the field.
        for (name, def, field) in [
            (
                "hec",
                json!({"splunk_hec": {"url": "ftp://x"}}),
                "splunk_hec.url",
            ),
            ("f2", json!({"file": {"dir": "../etc"}}), "file.dir"),
            ("f2", json!({"file": {"dir": "a"}, "bogus": 1}), "bogus"),
            (
                "hec",
                json!({"splunk_hec": {"url": "https://splunk:8088", "token_file": "/etc/shadow"}}),
                "token_file",
            ),
        ] {
            let e = h.put(name, def).await.unwrap_err();
            assert!(
                matches!(&e, DestinationError::Invalid(m) if m.contains(field)),
                "{field}: {e:?}"
            );
        }
        // A good one: running at once, its secret redacted.
        let s = h
            .put(
                "hec",
                json!({"splunk_hec": {"url": "https://splunk.example:8088", "token": "s3cret"}}),
            )
            .await
            .expect("put");
        assert_eq!(s.source, "api");
        assert_eq!(s.kind, "splunk_hec");
        let shown = s.config.expect("config").to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let listed = h.list().await.expect("list");
        assert_eq!(
            listed
                .iter()
                .map(|s| (s.name.as_str(), s.source.as_str()))
                .collect::<Vec<_>>(),
            vec![("files", "config"), ("hec", "api")]
        );
        // Paused: kept for the next process.
        assert!(h.set_paused("hec", true).await.expect("pause").paused);
        assert!(matches!(
            h.set_paused("nope", true).await.unwrap_err(),
            DestinationError::NotFound(_)
        ));
        stop.trigger();
        task.await.expect("supervisor");
        let log = sup.inner.log.clone();
        drop(sup);
        let metrics = gatehouse_runtime::metrics::Metrics::new();
        let again = Supervisor::new(
            vec![file_dest("files", &dir.path().join("fixed"))],
            log,
            Services::default(),
            Arc::new(ShiftedClock::new()),
            &metrics,
            false,
            Arc::new(AtomicBool::new(false)),
        )
        .expect("supervisor");
        again.reconcile().await.expect("reconcile");
        let h = again.handle();
        let listed = h.list().await.expect("list");
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().any(|s| s.name == "hec" && s.paused));
        assert!(listed.iter().any(|s| s.name == "files" && !s.paused));
        // A paused destination shows its lag; removed, it shows nothing.
        let lag = "gatehouse_forward_lag_lines{destination=\"hec\"}";
        gatehouse_testkit::until(
            "the lag of hec shown",
            Duration::from_secs(20),
            async || metrics.render().contains(lag),
        )
        .await;
        h.delete("hec").await.expect("delete");
        assert_eq!(h.list().await.expect("list").len(), 1);
        assert!(!metrics.render().contains(lag), "{}", metrics.render());
        assert!(matches!(
            h.delete("hec").await.unwrap_err(),
            DestinationError::NotFound(_)
        ));
        assert!(again.inner.any.load(Ordering::Relaxed));
    }

    #[test]
    fn secrets_are_redacted() {
        let d: DestinationConfig = serde_json::from_value(json!({
            "name": "w",
            "webhook": {"url": "https://x", "secret": "k", "headers": {"Authorization": "Bearer t"}}
        }))
        .expect("config");
        let v = redacted(&d).to_string();
        assert!(!v.contains("Bearer t") && !v.contains("\"k\""), "{v}");
        assert!(v.contains("Authorization"), "{v}");
    }
}
