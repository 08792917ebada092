//! Wall-clock helpers. Times are unix milliseconds (`i64`) in the model.

use std::time::{SystemTime, UNIX_EPOCH};

/// Current unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Days since the unix epoch for a unix time in seconds (negative clamps to 0).
pub fn unix_day(unix_secs: i64) -> u32 {
    u32::try_from(unix_secs.max(0) / 86_400).unwrap_or(u32::MAX)
}

/// Where "now" comes from: the system clock in production, a
/// [`ShiftedClock`] in tests that check expiry without waiting for it.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Current unix time in milliseconds.
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// The system clock, shared.
pub fn system_clock() -> std::sync::Arc<dyn Clock> {
    std::sync::Arc::new(SystemClock)
}

/// The system clock moved forward on demand (tests): time passes as
/// usual, and [`ShiftedClock::advance`] jumps ahead, so expiry is checked
/// without waiting for it while everything else keeps real time.
#[derive(Debug, Default)]
pub struct ShiftedClock(std::sync::atomic::AtomicI64);

impl ShiftedClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ShiftedClock {
    fn now_ms(&self) -> i64 {
        now_ms().saturating_add(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn a_shifted_clock_jumps_ahead_when_advanced() {
        let c = ShiftedClock::new();
        let before = now_ms();
        c.advance(std::time::Duration::from_secs(3_600));
        let t = c.now_ms();
        let after = now_ms();
        assert!(t >= before + 3_600_000 && t <= after + 3_600_000, "{t}");
    }
}

/// The civil (proleptic Gregorian) date of `days` since 1970-01-01, as
/// (year, month 1-12, day 1-31); H. Hinnant's algorithm.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SSZ` (UTC), for people:
/// tables, logs, reports.
pub fn utc_string(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod utc_tests {
    use super::utc_string;

    #[test]
    fn utc_strings_match_known_instants() {
        assert_eq!(utc_string(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc_string(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(utc_string(1_796_386_496_789), "2026-12-04 12:14:56Z");
        assert_eq!(utc_string(-1000), "1969-12-31 23:59:59Z");
        assert_eq!(utc_string(4_102_444_800_000), "2100-01-01 00:00:00Z");
    }
}
