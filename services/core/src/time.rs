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
