//! The log destination port: deliver a batch of lines and say, once the
//! receiver has them, that it does; or why not, and whether trying again
//! can help.

use async_trait::async_trait;

use crate::line::Line;

/// Why a batch was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver is down, slow or busy (a transport error, 429, 5xx, a
    /// full disk): the same batch is tried again after a back-off.
    #[error("{0}")]
    Retry(String),
    /// The receiver refused the batch for good (another 4xx): retrying
    /// cannot help. The batch is recorded as a dead letter with the
    /// receiver's answer and the destination moves on.
    #[error("{0}")]
    Reject(String),
}

/// Somewhere lines go (a file, an HTTP collector, syslog, ...).
#[async_trait]
pub trait Destination: Send + Sync + 'static {
    /// Delivers `lines`; `Ok` only once the receiver has all of them
    /// (written and synced, acknowledged). Called with one batch at a
    /// time, never empty.
    async fn deliver(&self, lines: &[Line]) -> Result<(), DeliveryError>;
}
