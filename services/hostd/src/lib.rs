//! hostd: the actor system that owns hosts.
//!
//! Every host is served by one `HostActor` (a task and its mailbox, ADR
//! 0052), spawned on demand when a request for it arrives, rebuilt from
//! the store, and passivated when idle. One host's requests are handled in order by its actor, so its
//! record, key epoch, labels and pending live queries never race. hostd
//! answers host RPCs on the shard subjects of the bus and listens to the
//! campaign and config broadcasts.

pub mod actor;
pub mod configs;
pub mod control;
pub mod leases;
pub mod registry;
pub mod service;
pub mod sharded;

pub use service::{HostdConfig, HostdDeps, LocalRoute, run};
pub use sharded::Ownership;
