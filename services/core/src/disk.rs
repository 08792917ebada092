//! The free space of the filesystem a local store writes to, and how much
//! of it a store needs before it trusts a write again: shared by the
//! embedded store and the forward log, which both reopen themselves after
//! a failed write (ADR 0022).

use std::path::Path;

/// Free space a local store waits for before it reopens after a failed
/// write: on a disk still (nearly) full a reopened journal takes a probe
/// write, then fails the next batch again.
pub const REOPEN_HEADROOM: u64 = 4 * 1024 * 1024;

/// Free bytes (for unprivileged writers) on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}
