//! Host identity and sharding.
//!
//! A host's id is derived from its hardware identity (`system_info.uuid`,
//! falling back to `osquery_info.instance_id`, `osquery_info.uuid`, then the
//! host identifier), so the same machine always maps to the same host, and
//! re-enrolling keeps its record and history. The shard follows from the id
//! alone, so any edge can route without a lookup.

use std::fmt;

use ring::digest;
use serde::{Deserialize, Serialize};

/// SMBIOS UUIDs that firmware vendors ship on many machines at once; never
/// used as an identity.
const BOGUS_UUIDS: &[&str] = &[
    "00000000-0000-0000-0000-000000000000",
    "03000200-0400-0500-0006-000700080009",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "4c4c4544-0000-2010-8020-80c04f202020",
];

/// Opaque host id: 32 lowercase hex characters.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct HostId(String);

impl HostId {
    /// Derives the id from an identity string (see [`identity_from_details`]).
    pub fn from_identity(identity: &str) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"gatehouse-host-v1\0");
        ctx.update(identity.trim().to_ascii_lowercase().as_bytes());
        let d = ctx.finish();
        HostId(hex(&d.as_ref()[..16]))
    }

    /// Parses an id given by a caller; `None` unless it is 32 lowercase hex.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| HostId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Shard of a host for `shard_count` shards (stable across processes).
pub fn shard_of(host: &HostId, shard_count: u32) -> u32 {
    let b = host.0.as_bytes();
    // The id is already a hash: its first 8 hex digits are uniform.
    let v = b[..8]
        .iter()
        .fold(0u32, |acc, c| (acc << 4) | u32::from(hex_val(*c)));
    v % shard_count.max(1)
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => 0,
    }
}

/// Lowercase hex of bytes.
/// `sha256=<hex HMAC-SHA256 of body under secret>`: the signature header
/// webhook receivers check (alerts, log destinations).
pub fn hmac_sha256(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex(ring::hmac::sign(&key, body).as_ref()))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// SHA-256 of bytes as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// Picks the identity of an enrolling host from its `host_details`.
pub fn identity_from_details(
    details: &serde_json::Map<String, serde_json::Value>,
    host_identifier: &str,
) -> String {
    let field = |table: &str, col: &str| -> Option<String> {
        details
            .get(table)?
            .get(col)?
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    if let Some(uuid) = field("system_info", "uuid")
        && !BOGUS_UUIDS.contains(&uuid.to_ascii_lowercase().as_str())
    {
        return format!("hw:{}", uuid.to_ascii_lowercase());
    }
    if let Some(id) = field("osquery_info", "instance_id") {
        return format!("instance:{id}");
    }
    if let Some(id) = field("osquery_info", "uuid") {
        return format!("osquery:{id}");
    }
    format!("identifier:{host_identifier}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_case_insensitive() {
        let a = HostId::from_identity("hw:ABC");
        let b = HostId::from_identity("hw:abc");
        assert_eq!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(HostId::parse(a.as_str()).is_some());
        assert!(HostId::parse("xyz").is_none());
    }

    #[test]
    fn shards_spread() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..2000 {
            seen.insert(shard_of(&HostId::from_identity(&format!("h{i}")), 16));
        }
        assert_eq!(seen.len(), 16);
    }

    #[test]
    fn identity_prefers_hardware_uuid_and_skips_bogus_ones() {
        let d: serde_json::Value = serde_json::json!({
            "system_info": {"uuid": "03000200-0400-0500-0006-000700080009"},
            "osquery_info": {"instance_id": "inst-1", "uuid": "u-1"}
        });
        let m = d.as_object().cloned().unwrap_or_default();
        assert_eq!(identity_from_details(&m, "h"), "instance:inst-1");
        let d2 = serde_json::json!({"system_info": {"uuid": "EC2-AB"}});
        let m2 = d2.as_object().cloned().unwrap_or_default();
        assert_eq!(identity_from_details(&m2, "h"), "hw:ec2-ab");
        assert_eq!(
            identity_from_details(&serde_json::Map::new(), "h"),
            "identifier:h"
        );
    }
}
