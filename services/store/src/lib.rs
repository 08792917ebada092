//! Store adapters for the `gatehouse_core::ports::Store` port, and the one
//! conformance suite every adapter must pass.
//!
//! - [`embedded::EmbeddedStore`]: fjall (an LSM tree in the data directory),
//!   for the all-in-one server. Every write is a fjall batch committed with
//!   `SyncData`, so a call returns only once its data is on disk.

pub mod embedded;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use embedded::EmbeddedStore;
