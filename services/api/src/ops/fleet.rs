//! The fleet at a glance (`GET /api/v1/fleet/summary`): hosts by
//! platform and osquery version, online / offline / silent for 1, 7 and
//! 30 days, hosts on an older config generation, enrollments per day.
//! Cheap per page load at any fleet size: the summary is a snapshot kept
//! in the store (meta key `fleet_summary`), read with one point read, and
//! made again by one pass over the host records: for a fleet of
//! [`SMALL_FLEET`] hosts or more in the background before it is
//! [`SUMMARY_EVERY`] old ([`keep_fresh`], in every api process; the first
//! to find it stale remakes it), for a smaller one by the request that
//! finds it [`SMALL_FLEET_EVERY`] old. The answer says how old it is.

use std::collections::BTreeMap;
use std::time::Duration;

use gatehouse_core::model::Role::Observer;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::NoInput;
use crate::ApiError;
use crate::admin::{Admin, Caller};
use crate::registry::{Audit, Entry, IntoPb, Operation, Spec, Verb, entry};

pub(super) fn entries() -> Vec<Entry> {
    vec![entry::<FleetSummaryOp>()]
}

/// How old a summary of a large fleet may be before it is made again.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// A fleet smaller than this is summed up afresh when the summary is
/// [`SMALL_FLEET_EVERY`] old (a pass over it costs little).
pub const SMALL_FLEET: u64 = 10_000;
pub const SMALL_FLEET_EVERY: Duration = Duration::from_secs(5);

/// How old a summary of `hosts` hosts may be.
pub(crate) fn max_age(hosts: u64) -> Duration {
    if hosts < SMALL_FLEET {
        SMALL_FLEET_EVERY
    } else {
        SUMMARY_EVERY
    }
}
const META_KEY: &str = "fleet_summary";
const DAY_MS: i64 = 86_400_000;
/// Days of enrollments shown.
const ENROLL_DAYS: i64 = 30;

/// What the fleet looks like, as of `at`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FleetSummary {
    /// When it was made (ms since the epoch).
    pub at: i64,
    pub hosts: u64,
    /// Seen within the online window.
    pub online: u64,
    pub offline: u64,
    /// Not seen for 1, 7 and 30 days or more.
    pub silent_1d: u64,
    pub silent_7d: u64,
    pub silent_30d: u64,
    /// The current config generation, and hosts last served an older one.
    pub config_generation: u64,
    pub older_config: u64,
    pub by_platform: BTreeMap<String, u64>,
    pub by_osquery_version: BTreeMap<String, u64>,
    /// First enrollments per day (UTC, `YYYY-MM-DD`), the last 30 days.
    pub enrolled_by_day: BTreeMap<String, u64>,
}

impl IntoPb for FleetSummary {
    type Pb = prost_types::Struct;
    fn into_pb(self) -> prost_types::Struct {
        serde_json::to_value(self).unwrap_or_default().into_pb()
    }
}

fn day_of(ms: i64) -> String {
    let days = ms.div_euclid(DAY_MS);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

impl Admin {
    /// One pass over the host records.
    async fn make_summary(&self) -> Result<FleetSummary, ApiError> {
        let now = self.now();
        let window = i64::try_from(self.cfg.online_window.as_millis()).unwrap_or(i64::MAX);
        let generation = self.store.config_generation().await?;
        let mut s = FleetSummary {
            at: now,
            config_generation: generation,
            ..FleetSummary::default()
        };
        let since = now - ENROLL_DAYS * DAY_MS;
        let mut cursor: Option<String> = None;
        loop {
            let page = self.store.list_hosts(cursor.as_deref(), 1000).await?;
            for h in &page.items {
                s.hosts += 1;
                if h.is_online(now, window) {
                    s.online += 1;
                } else {
                    s.offline += 1;
                }
                let quiet = now - h.last_seen;
                s.silent_1d += u64::from(quiet >= DAY_MS);
                s.silent_7d += u64::from(quiet >= 7 * DAY_MS);
                s.silent_30d += u64::from(quiet >= 30 * DAY_MS);
                s.older_config += u64::from(h.config_generation < generation);
                let platform = if h.platform.is_empty() {
                    "unknown"
                } else {
                    &h.platform
                };
                *s.by_platform.entry(platform.to_owned()).or_default() += 1;
                let v = if h.osquery_version.is_empty() {
                    "unknown"
                } else {
                    &h.osquery_version
                };
                *s.by_osquery_version.entry(v.to_owned()).or_default() += 1;
                if h.enrolled_at >= since {
                    *s.enrolled_by_day.entry(day_of(h.enrolled_at)).or_default() += 1;
                }
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        Ok(s)
    }

    /// The stored summary, if any.
    async fn stored_summary(&self) -> Result<Option<FleetSummary>, ApiError> {
        Ok(self
            .store
            .get_meta(META_KEY)
            .await?
            .and_then(|raw| serde_json::from_slice::<FleetSummary>(&raw).ok()))
    }

    /// Makes a new summary and keeps it.
    async fn refresh_summary(&self) -> Result<FleetSummary, ApiError> {
        let s = self.make_summary().await?;
        let raw = serde_json::to_vec(&s).map_err(|e| ApiError::Unavailable(e.to_string()))?;
        if let Err(e) = self.store.put_meta(META_KEY, &raw).await {
            tracing::warn!(error = %e, "the fleet summary could not be kept; it is made again later");
        }
        Ok(s)
    }

    /// The stored summary when recent enough, else a new one (stored).
    /// [`keep_fresh`] remakes it before it gets that old, so a request
    /// pays for a pass over the hosts only when nothing refreshed it.
    pub(crate) async fn fleet_summary(&self) -> Result<FleetSummary, ApiError> {
        let now = self.now();
        if let Some(s) = self.stored_summary().await?
            && s.at <= now
            && now - s.at < ms(max_age(s.hosts))
        {
            return Ok(s);
        }
        self.refresh_summary().await
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Remakes a large fleet's summary in the background once it is three
/// quarters of [`SUMMARY_EVERY`] old (whichever api process gets there
/// first; the others then find it fresh), until `shutdown`, so page loads
/// never wait for a pass over the hosts. (A small fleet's is made by the
/// request that finds it old.)
pub async fn keep_fresh(admin: std::sync::Arc<Admin>, shutdown: gatehouse_runtime::Shutdown) {
    let every = SUMMARY_EVERY / 4;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let now = admin.now();
        let stale = match admin.stored_summary().await {
            Ok(Some(s)) => {
                s.hosts >= SMALL_FLEET && (s.at > now || now - s.at >= ms(SUMMARY_EVERY) * 3 / 4)
            }
            Ok(None) | Err(_) => false,
        };
        if stale && let Err(e) = admin.refresh_summary().await {
            tracing::warn!(error = %e, "making the fleet summary failed; trying again shortly");
        }
    }
}

pub struct FleetSummaryOp;

impl Operation for FleetSummaryOp {
    const SPEC: Spec = Spec {
        id: "fleetSummary",
        verb: Verb::Get,
        path: "/api/v1/fleet/summary",
        grpc: "FleetSummary",
        summary: "The fleet at a glance (a snapshot at most a minute old, 5 s under 10,000 hosts): hosts by platform and osquery version, online, silent, on an older config, enrollments per day",
        role: Observer,
        action: "fleet.summary",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = NoInput;
    type Resp = FleetSummary;

    async fn run(a: &Admin, _: &Caller, _: NoInput) -> Result<FleetSummary, ApiError> {
        a.fleet_summary().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_civil_dates() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(1_717_496_431_000), "2024-06-04");
        assert_eq!(day_of(951_782_400_000), "2000-02-29");
        assert_eq!(day_of(-1), "1969-12-31");
    }
}
