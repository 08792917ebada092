//! Repeated log lines, throttled ([`LogThrottle`]): during an outage every
//! agent request fails the same way, thousands of times a second. The log
//! says so the first time, then at most once per interval per kind, with
//! how many like it were left out in between; the metrics keep the exact
//! counts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Admits one log line per key and interval.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

/// Keys tracked before the table starts afresh (keys are kinds of
/// failure, a handful in practice).
const MAX_KEYS: usize = 1024;

impl LogThrottle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` when a line for `key` should be logged now, `n` being
    /// how many were left out since the last one; `None` to leave this one
    /// out.
    pub fn admit(&self, key: &str) -> Option<u64> {
        let Ok(mut last) = self.last.lock() else {
            return Some(0);
        };
        let now = Instant::now();
        match last.get_mut(key) {
            Some((at, skipped)) if now.duration_since(*at) < self.interval => {
                *skipped += 1;
                None
            }
            Some((at, skipped)) => {
                *at = now;
                Some(std::mem::take(skipped))
            }
            None => {
                if last.len() >= MAX_KEYS {
                    last.clear();
                }
                last.insert(key.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_interval_with_the_count_left_out() {
        let t = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(t.admit("log"), Some(0));
        for _ in 0..500 {
            assert_eq!(t.admit("log"), None);
        }
        assert_eq!(t.admit("config"), Some(0), "each kind apart");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(t.admit("log"), Some(500));
        assert_eq!(t.admit("log"), None);
    }
}
