//! The Gatehouse load harness: simulated osquery agents that behave the way
//! `osqueryd` does on the wire (`shared/docs/osquery-protocol.md`), by the
//! tens of thousands in one process, with reports.
//!
//! It talks HTTPS only and links no Gatehouse service crate, so it can
//! drive any osquery TLS server (endpoint paths are configurable).

pub mod admin;
pub mod agent;
mod agent_dist;
pub mod judge;
pub mod metrics;
pub mod modes;
pub mod osinfo;
pub mod procstat;
pub mod report;
pub mod schedule;
pub mod tables;
pub mod transport;
