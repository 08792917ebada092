//! The ScyllaDB adapter's carve sessions and blocks (large blocks chunked).

use gatehouse_core::ports::CarveStore;

use super::*;

#[async_trait]
impl CarveStore for ScyllaStore {
    async fn create_carve(&self, s: &CarveSession) -> StoreResult<()> {
        let i = &self.inner;
        let applied = lwt_applied(
            i.exec(Q::CreateCarve, (s.session_id.as_str(), enc(s)?))
                .await?,
        )?;
        if applied == Some(false) {
            return Err(StoreError::Conflict("carve session exists".into()));
        }
        let (month, inv) = recent_keys(s.created_at);
        i.exec(Q::PutCarveByMonth, (month, inv, s.session_id.as_str()))
            .await?;
        self.note_recent("carve", month).await
    }

    async fn get_carve(&self, session_id: &str) -> StoreResult<Option<CarveSession>> {
        match self
            .inner
            .one::<(Vec<u8>,)>(Q::GetCarve, (session_id,))
            .await?
        {
            Some((doc,)) => Ok(Some(self.carve_with_count(dec(session_id, &doc)?).await?)),
            None => Ok(None),
        }
    }

    async fn update_carve(&self, s: &CarveSession) -> StoreResult<()> {
        self.inner
            .exec(Q::PutCarve, (s.session_id.as_str(), enc(s)?))
            .await
            .map(|_| ())
    }

    async fn list_carves(
        &self,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<CarveSession>> {
        let ids = self
            .recent_ids("carve", Q::CarvesInMonth, before, limit)
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(c) = self.get_carve(&id).await? {
                out.push(c);
            }
        }
        Ok(out)
    }

    async fn put_carve_block(
        &self,
        session_id: &str,
        block_id: u64,
        data: &[u8],
    ) -> StoreResult<BlockOutcome> {
        let i = &self.inner;
        if i.one::<(Vec<u8>,)>(Q::GetCarve, (session_id,))
            .await?
            .is_none()
        {
            return Err(StoreError::NotFound(format!("carve session {session_id}")));
        }
        let block = i64::try_from(block_id)
            .map_err(|_| StoreError::Invalid(format!("block id {block_id} is out of range")))?;
        let new_block = i
            .one::<(i32,)>(Q::GetBlockDone, (session_id, block))
            .await?
            .is_none();
        let chunk_count = data.len().div_ceil(CARVE_CHUNK_BYTES).max(1);
        let chunks: Vec<(&str, i64, i32, &[u8])> = data
            .chunks(CARVE_CHUNK_BYTES)
            .enumerate()
            .map(|(n, c)| (session_id, block, i32::try_from(n).unwrap_or(i32::MAX), c))
            .collect();
        // A single-partition batch of chunks, then the markers: a block
        // counts as received only once all of it is stored.
        i.batch(Q::PutChunk, chunks).await?;
        i.exec(
            Q::PutBlockDone,
            (
                session_id,
                block,
                i32::try_from(chunk_count).unwrap_or(i32::MAX),
            ),
        )
        .await?;
        i.exec(Q::PutBlockIndex, (session_id, block)).await?;
        Ok(BlockOutcome {
            blocks_received: self.count_blocks(session_id).await?,
            new_block,
        })
    }

    async fn get_carve_block(&self, session_id: &str, block_id: u64) -> StoreResult<Option<Bytes>> {
        let i = &self.inner;
        let Ok(block) = i64::try_from(block_id) else {
            return Ok(None);
        };
        let Some((count,)) = i
            .one::<(i32,)>(Q::GetBlockDone, (session_id, block))
            .await?
        else {
            return Ok(None);
        };
        let count = usize::try_from(count).unwrap_or(0);
        let chunks: Vec<(Vec<u8>,)> = i.rows(Q::Chunks, (session_id, block), count).await?;
        let mut out = Vec::with_capacity(chunks.iter().map(|(c,)| c.len()).sum());
        for (c,) in chunks {
            out.extend_from_slice(&c);
        }
        Ok(Some(Bytes::from(out)))
    }
}
