//! Store adapters for the `gatehouse_core::ports::Store` port, and the one
//! conformance suite every adapter must pass.
//!
//! - [`embedded::EmbeddedStore`]: fjall (an LSM tree in the data directory),
//!   for the all-in-one server. Every write is a fjall batch committed with
//!   `SyncData`, so a call returns only once its data is on disk.
//! - [`scylla::ScyllaStore`]: ScyllaDB (or Cassandra) through the `scylla`
//!   driver, for clusters. Schema and access paths:
//!   `docs/architecture/data-model.md`.

pub mod embedded;

#[cfg(feature = "cql-test-server")]
pub mod cql_test_server;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub mod scylla;

pub use embedded::EmbeddedStore;
pub use scylla::{ScyllaConfig, ScyllaStore};
