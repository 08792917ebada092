//! Node keys the edge can verify without a storage lookup.
//!
//! A key is `<host_id>.<epoch>.<mac>` where `mac` is a truncated
//! HMAC-SHA256 over the host id and epoch under a cluster-wide secret. The
//! edge checks the MAC (forged keys never reach an actor); the host's actor
//! checks that the epoch is still the current one, which is how keys are
//! rotated (epoch + 1, new key) and revoked (epoch + 1, no key).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use crate::HostId;

const MAC_BYTES: usize = 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeKeyError {
    #[error("node key is missing")]
    Missing,
    #[error("node key is malformed")]
    Malformed,
    #[error("node key signature does not verify")]
    BadSignature,
}

/// Mints and verifies node keys.
#[derive(Clone)]
pub struct NodeKeys {
    key: hmac::Key,
}

impl std::fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKeys(..)")
    }
}

impl NodeKeys {
    /// `secret` should be at least 32 random bytes.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn mac(&self, host: &str, epoch: u64) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(host.as_bytes());
        ctx.update(b".");
        ctx.update(&epoch.to_be_bytes());
        ctx.sign()
    }

    pub fn mint(&self, host: &HostId, epoch: u64) -> String {
        let tag = self.mac(host.as_str(), epoch);
        format!(
            "{}.{}.{}",
            host,
            epoch,
            URL_SAFE_NO_PAD.encode(&tag.as_ref()[..MAC_BYTES])
        )
    }

    /// Returns the host and epoch of a genuine key.
    pub fn verify(&self, key: &str) -> Result<(HostId, u64), NodeKeyError> {
        if key.is_empty() {
            return Err(NodeKeyError::Missing);
        }
        let mut parts = key.splitn(3, '.');
        let (Some(host), Some(epoch), Some(mac)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(NodeKeyError::Malformed);
        };
        let host = HostId::parse(host).ok_or(NodeKeyError::Malformed)?;
        let epoch: u64 = epoch.parse().map_err(|_| NodeKeyError::Malformed)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| NodeKeyError::Malformed)?;
        if mac.len() != MAC_BYTES {
            return Err(NodeKeyError::Malformed);
        }
        let expected = self.mac(host.as_str(), epoch);
        if !constant_time_eq(&expected.as_ref()[..MAC_BYTES], &mac) {
            return Err(NodeKeyError::BadSignature);
        }
        Ok((host, epoch))
    }
}

/// Constant-time equality for equal-length secrets.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Compares a presented secret with a known one without leaking how much of
/// it matched (both are hashed first, so lengths do not leak either).
pub fn secret_matches(presented: &str, known: &str) -> bool {
    let a = ring::digest::digest(&ring::digest::SHA256, presented.as_bytes());
    let b = ring::digest::digest(&ring::digest::SHA256, known.as_bytes());
    constant_time_eq(a.as_ref(), b.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_verify_roundtrip_and_forgery() {
        let k = NodeKeys::new(b"0123456789abcdef0123456789abcdef");
        let host = HostId::from_identity("hw:x");
        let key = k.mint(&host, 7);
        assert_eq!(k.verify(&key), Ok((host.clone(), 7)));
        // Changing the epoch invalidates the mac.
        let forged = key.replacen(".7.", ".8.", 1);
        assert_eq!(k.verify(&forged), Err(NodeKeyError::BadSignature));
        let other = NodeKeys::new(b"another secret another secret 12");
        assert_eq!(other.verify(&key), Err(NodeKeyError::BadSignature));
        assert_eq!(k.verify(""), Err(NodeKeyError::Missing));
        assert_eq!(k.verify("abc"), Err(NodeKeyError::Malformed));
        assert_eq!(k.verify("a.b.c"), Err(NodeKeyError::Malformed));
    }

    #[test]
    fn secrets_compare() {
        assert!(secret_matches("s3cret", "s3cret"));
        assert!(!secret_matches("s3cret", "s3cret "));
        assert!(!secret_matches("", "x"));
    }
}
