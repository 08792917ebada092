//! A small real filesystem for tests of a full disk: a tmpfs mounted on a
//! temporary directory (root only; without root the test says NOT RUN and
//! is skipped), filled to the last byte on demand.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A tmpfs on a temporary directory, unmounted when dropped.
#[derive(Debug)]
pub struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// Mounts `mib` MiB; `None` (printing a NOT RUN line naming `what`)
    /// where mounting needs a root this run does not have.
    pub fn mount(mib: u32, what: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            println!("NOT RUN: mounting a tmpfs needs root ({what})");
            return None;
        }
        Some(Self(dir))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Fills the filesystem to its last byte with a file (returned: remove
    /// it to free the space), as another tenant of the disk would.
    pub fn fill_up(&self) -> std::io::Result<PathBuf> {
        let ballast = self.path().join("ballast");
        let mut f = std::fs::File::create(&ballast)?;
        for size in [1 << 20, 64 << 10, 4 << 10, 1] {
            let chunk = vec![0u8; size];
            while f.write_all(&chunk).is_ok() {}
        }
        let _ = f.sync_all();
        Ok(ballast)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: gone from view now, released once nothing holds a file
        // in it (a store's background thread may still be closing).
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}
