//! Protobuf messages shared by every Gatehouse service (package `gatehouse.v1`).
//!
//! The `.proto` sources live beside this crate in `gatehouse/v1/`; `build.rs`
//! compiles them with protox, so no system `protoc` is needed.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/gatehouse.v1.rs"));
}

pub use prost::Message;

pub mod topics;
