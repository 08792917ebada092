//! The `gatehouse` binary's library: configuration, first-start bootstrap
//! (data directory, certificates, secrets, the osquery flagfile) and the
//! all-in-one wiring of every role (`serve`). `main.rs` only parses the
//! command line and calls into here, so tests start the same server
//! in-process.

pub mod bootstrap;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod output;
pub mod roles;
pub mod serve;
