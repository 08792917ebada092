//! `gatehouse.v1.HostdControl` (served on the ops port): what this hostd
//! serves (shards and their count, actors, ring members) and Drain, which
//! hands every shard over and leaves the ring while the process stays up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_proto::v1 as pb;
use gatehouse_proto::v1::hostd_control_server::{HostdControl, HostdControlServer};
use gatehouse_runtime::Shutdown;
use tonic::{Request, Response, Status};

use crate::actor::HostCtx;
use crate::leases::Leases;

/// The full name of the service.
pub const SERVICE: &str = "gatehouse.v1.HostdControl";

pub struct Control {
    pub leases: Arc<Leases>,
    pub ctx: Arc<HostCtx>,
    pub shards: u32,
    /// Triggers [`crate::run`]'s drain (hands every shard over).
    pub drain: Shutdown,
    /// How long Drain waits for the handover before answering.
    pub drain_wait: Duration,
}

impl Control {
    /// The service, for callers `check` accepts (admin bearer tokens).
    pub fn routes(self, check: gatehouse_runtime::grpc::TokenCheck) -> tonic::service::Routes {
        tonic::service::Routes::new(HostdControlServer::with_interceptor(
            self,
            gatehouse_runtime::grpc::bearer(check),
        ))
    }
}

#[tonic::async_trait]
impl HostdControl for Control {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::HostdStatus>, Status> {
        let members = self
            .leases
            .members()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::HostdStatus {
            instance: self.leases.me().to_owned(),
            shard_count: self.shards,
            shards: self.leases.held().into_keys().collect(),
            actors: self.ctx.registry.len() as u64,
            members,
            draining: self.drain.is_triggered(),
        }))
    }

    async fn drain(
        &self,
        _: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainReply>, Status> {
        let held = self.leases.held().len();
        tracing::info!(shards = held, "drain requested");
        self.drain.trigger();
        let deadline = Instant::now() + self.drain_wait;
        while !self.leases.held().is_empty() {
            if Instant::now() >= deadline {
                return Err(Status::deadline_exceeded(format!(
                    "drain under way: {} of {held} shards still held after {:?}",
                    self.leases.held().len(),
                    self.drain_wait
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Response::new(pb::DrainReply {
            released: u32::try_from(held).unwrap_or(u32::MAX),
        }))
    }
}
