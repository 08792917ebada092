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

impl v1::HostRequest {
    /// Operation `op` for the host `host_id`, presenting key epoch
    /// `key_epoch` (0 where no key is presented: enrollment).
    pub fn new(host_id: impl ToString, key_epoch: u64, op: v1::host_request::Op) -> Self {
        Self {
            host_id: host_id.to_string(),
            key_epoch,
            op: Some(op),
        }
    }
}
