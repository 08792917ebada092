//! The embedded store's carve sessions and blocks.

use gatehouse_core::ports::CarveStore;

use super::*;

#[async_trait]
impl CarveStore for EmbeddedStore {
    async fn create_carve(&self, s: &CarveSession) -> StoreResult<()> {
        let (k, v) = (s.session_id.as_bytes().to_vec(), enc(s)?);
        self.run(move |i| {
            if i.carves.contains_key(&k).map_err(unavailable)? {
                return Err(StoreError::Conflict("carve session exists".into()));
            }
            i.commit(vec![(&i.carves, k, v)])
        })
        .await
    }

    async fn get_carve(&self, session_id: &str) -> StoreResult<Option<CarveSession>> {
        let k = session_id.as_bytes().to_vec();
        self.run(move |i| i.get_json(&i.carves, &k)).await
    }

    async fn update_carve(&self, s: &CarveSession) -> StoreResult<()> {
        let (k, v) = (s.session_id.as_bytes().to_vec(), enc(s)?);
        self.run(move |i| {
            let _g = i.rmw.lock().map_err(|_| unavailable("lock poisoned"))?;
            i.commit(vec![(&i.carves, k, v)])
        })
        .await
    }

    async fn list_carves(
        &self,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<CarveSession>> {
        let before = before.map(|(at, id)| (at, id.to_owned()));
        self.run(move |i| {
            let mut all: Vec<CarveSession> = i.scan_json(&i.carves, b"")?;
            all.sort_by(|a, b| {
                b.created_at
                    .cmp(&a.created_at)
                    .then(a.session_id.cmp(&b.session_id))
            });
            Ok(newest_first_after(all, before, limit, |c| {
                (c.created_at, &c.session_id)
            }))
        })
        .await
    }

    async fn put_carve_block(
        &self,
        session_id: &str,
        block_id: u64,
        data: &[u8],
    ) -> StoreResult<BlockOutcome> {
        let sid = session_id.to_owned();
        let data = data.to_vec();
        self.run(move |i| {
            let _g = i.rmw.lock().map_err(|_| unavailable("lock poisoned"))?;
            let mut s: CarveSession = i
                .get_json(&i.carves, sid.as_bytes())?
                .ok_or_else(|| StoreError::NotFound(format!("carve session {sid}")))?;
            let k = join(&[sid.as_bytes(), &block_id.to_be_bytes()]);
            let new_block = !i.blocks.contains_key(&k).map_err(unavailable)?;
            let mut b = i.db.batch();
            b.insert(&i.blocks, k, data);
            if new_block {
                s.blocks_received += 1;
                b.insert(&i.carves, sid.as_bytes().to_vec(), enc(&s)?);
            }
            i.write(b)?;
            Ok(BlockOutcome {
                blocks_received: s.blocks_received,
                new_block,
            })
        })
        .await
    }

    async fn get_carve_block(&self, session_id: &str, block_id: u64) -> StoreResult<Option<Bytes>> {
        let k = join(&[session_id.as_bytes(), &block_id.to_be_bytes()]);
        self.run(move |i| {
            Ok(i.blocks
                .get(&k)
                .map_err(unavailable)?
                .map(|v| Bytes::copy_from_slice(&v)))
        })
        .await
    }
}
