//! Completing a carve: once every block is stored, hash the assembled
//! archive (blocks in order) and mark the session complete. Idempotent: a
//! session already complete is returned as is.

use ring::digest;

use crate::ids::hex;
use crate::model::{CarveSession, CarveState};
use crate::ports::{Store, StoreError};
use crate::time::now_ms;

/// zstd frame magic (`--carver_compression=true`).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Hashes and completes `session` if all its blocks are present.
pub async fn finalize(
    store: &dyn Store,
    mut session: CarveSession,
) -> Result<CarveSession, StoreError> {
    if session.state == CarveState::Complete || session.blocks_received < session.block_count {
        return Ok(session);
    }
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut format = "tar";
    for id in 0..session.block_count {
        let block = store
            .get_carve_block(&session.session_id, id)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!("carve {} block {id}", session.session_id))
            })?;
        if id == 0 && block.starts_with(&ZSTD_MAGIC) {
            format = "zstd";
        }
        ctx.update(&block);
    }
    session.sha256 = Some(hex(ctx.finish().as_ref()));
    session.format = Some(format.to_owned());
    session.state = CarveState::Complete;
    session.completed_at = Some(now_ms());
    store.update_carve(&session).await?;
    Ok(session)
}
