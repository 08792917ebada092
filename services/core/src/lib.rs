//! Gatehouse's domain core: the osquery wire types and their validation, the
//! domain model (hosts, queries, schedules, campaigns, carves, logs), config
//! assembly, node keys, and the port traits (`Store`, `Bus`, `LogSink`) that
//! the adapters in `gatehouse-store` and `gatehouse-bus` implement.
//!
//! Pure logic only: no network, no database, no async runtime beyond
//! `tokio::sync` channels used by the bus port.

pub mod carves;
pub mod config;
pub mod disk;
pub mod ids;
pub mod logline;
pub mod logs;
pub mod model;
pub mod nodekey;
pub mod ports;
pub mod rules;
pub mod time;
pub mod wire;

pub use ids::{HostId, shard_of};
