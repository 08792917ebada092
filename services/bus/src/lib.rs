//! Bus adapters for the `gatehouse_core::ports::Bus` port, the typed
//! host-RPC client that edge and api use to reach a host's actor, and the
//! one conformance suite every bus adapter must pass.
//!
//! - [`answers`]: the reads and touches a host client answers without
//!   asking the host's actor, until a change is announced (ADR 0031).
//! - [`inproc::InProcBus`]: NATS semantics (subjects, `*`/`>` wildcards,
//!   queue groups, request/reply, no-responders) inside one process, for
//!   the all-in-one server.
//! - [`nats::NatsBus`]: a real NATS connection, for the cluster.
//! - [`leases`]: the shard-lease port (which hostd serves which shard,
//!   with fencing tokens): JetStream KV for the cluster, in memory for one
//!   process, one conformance suite for both.
//! - [`logstream`]: the durable log stream port (edges append agent log
//!   batches, ingest consumes them): JetStream for the cluster, in memory
//!   for one process, one conformance suite for both.
//! - [`events`]: typed publishing of the messages declared in
//!   [`gatehouse_proto::topics`], and their domain conversions.

pub mod answers;
pub mod events;
pub mod hostrpc;
pub mod inproc;
pub mod leases;
pub mod logstream;
pub mod nats;

#[cfg(feature = "nats-test-server")]
pub mod nats_test_server;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use hostrpc::{HostClient, RpcError};
pub use inproc::InProcBus;
pub use nats::{NatsBus, NatsConfig};
