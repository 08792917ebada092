//! testkit: what every crate's tests share, so a wait is written once.
//!
//! [`eventually`] is the one way a test waits for something it cannot be
//! told about directly: it polls a check until the check yields a value,
//! for at most a bounded time, and says which condition was not met. It is
//! never a fixed sleep: a fast machine moves on at once, a slow one gets
//! until the bound. [`tmpfs::Tmpfs`] is a real small filesystem to fill;
//! [`usage`] reads the CPU and bytes written so far, for benchmarks;
//! [`process::Process`] is a child process killed when the test drops it.

pub mod process;
pub mod tmpfs;
pub mod usage;

use std::time::{Duration, Instant};

/// How often a check is repeated.
const POLL: Duration = Duration::from_millis(20);

/// Why [`eventually`] gave up.
#[derive(Debug)]
pub enum Unmet<E> {
    /// The check never yielded a value within the bound.
    TimedOut { what: String, after: Duration },
    /// The check itself failed.
    Failed(E),
}

impl<E: std::fmt::Display> std::fmt::Display for Unmet<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unmet::TimedOut { what, after } => write!(f, "not met within {after:?}: {what}"),
            Unmet::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl<E: std::fmt::Debug + std::fmt::Display> std::error::Error for Unmet<E> {}

/// Repeats `check` until it yields `Some`, for at most `timeout`; a failing
/// check ends the wait with its error.
pub async fn eventually<T, E>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<Option<T>, E>,
) -> Result<T, Unmet<E>> {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await.map_err(Unmet::Failed)? {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(Unmet::TimedOut {
                what: what.to_owned(),
                after: timeout,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for a condition that cannot fail; panics, naming it,
/// when it is not met within `timeout`.
pub async fn until(what: &str, timeout: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let r = eventually(what, timeout, async || {
        Ok::<_, std::convert::Infallible>(condition().await.then_some(()))
    })
    .await;
    if let Err(e) = r {
        panic!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_met_condition_returns_its_value_and_an_unmet_one_names_itself() {
        let mut n = 0;
        let v = eventually("the third try", Duration::from_secs(1), || {
            n += 1;
            let now = n;
            async move { Ok::<_, String>((now == 3).then_some(now)) }
        })
        .await;
        assert_eq!(v.ok(), Some(3));
        let e = eventually("never", Duration::from_millis(100), || async {
            Ok::<Option<()>, String>(None)
        })
        .await;
        assert!(matches!(e, Err(Unmet::TimedOut { ref what, .. }) if what == "never"));
        let e = eventually("a failing check", Duration::from_secs(1), || async {
            Err::<Option<()>, _>("store down".to_owned())
        })
        .await;
        assert_eq!(e.err().map(|e| e.to_string()), Some("store down".into()));
    }
}
