//! A child process a test starts (a server, a daemon) that is killed and
//! reaped when its handle drops, so a failed assertion or an early `?`
//! never leaves it running after the test.

use std::process::Child;

/// A child process killed (SIGKILL) and waited for on drop.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Process {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}
