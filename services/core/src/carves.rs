//! Completing a carve: once every block is stored, hash the assembled
//! archive (blocks in order) and mark the session complete. Idempotent: a
//! session already complete is returned as is. Also what a carve asked
//! for: the path in the live query that requested it.

use ring::digest;

use crate::ids::hex;
use crate::model::{CarveSession, CarveState};
use crate::ports::{Store, StoreError};
use crate::time::now_ms;

/// The path a carve query asked for: the quoted value compared with `path`
/// (`path = '/etc/passwd'`, `path LIKE '/Users/%/.ssh/%'`), case-insensitive
/// in keywords; `None` when the SQL names no such path.
pub fn requested_path(sql: &str) -> Option<String> {
    let lower = sql.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut from = 0;
    while let Some(i) = lower[from..].find("path").map(|i| i + from) {
        from = i + 4;
        // A whole word: not `xpath`, not `paths`.
        let before = i.checked_sub(1).map(|j| bytes[j]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            || bytes
                .get(i + 4)
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            continue;
        }
        let rest = lower[i + 4..].trim_start();
        let after_op = if let Some(r) = rest.strip_prefix('=') {
            r
        } else if let Some(r) = rest.strip_prefix("like") {
            r
        } else {
            continue;
        };
        let value_start = sql.len() - after_op.trim_start().len();
        let original = &sql[value_start..];
        let Some(quoted) = original.strip_prefix('\'') else {
            continue;
        };
        // SQL doubles a quote inside a string.
        let mut out = String::new();
        let mut chars = quoted.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    out.push('\'');
                    continue;
                }
                return Some(out);
            }
            out.push(c);
        }
        return None;
    }
    None
}

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

#[cfg(test)]
mod path_tests {
    use super::requested_path;

    #[test]
    fn the_requested_path_is_read_from_the_carve_query() {
        let p = |sql: &str| requested_path(sql);
        assert_eq!(
            p("SELECT * FROM carves WHERE path = '/etc/passwd' AND carve = 1").as_deref(),
            Some("/etc/passwd")
        );
        assert_eq!(
            p("select * from carves where carve=1 and PATH like '/Users/%/.ssh/%'").as_deref(),
            Some("/Users/%/.ssh/%")
        );
        assert_eq!(
            p("SELECT * FROM carves WHERE path='/tmp/it''s here' AND carve=1").as_deref(),
            Some("/tmp/it's here")
        );
        assert_eq!(
            p("SELECT * FROM carves WHERE xpath = 'a' AND carve = 1"),
            None
        );
        assert_eq!(p("SELECT path FROM file"), None);
        assert_eq!(p("SELECT * FROM carves WHERE path = '/never closed"), None);
        assert_eq!(p(""), None);
    }
}
