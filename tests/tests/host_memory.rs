//! The heap a host record holds, with `host_details` of the size osquery
//! sends (three tables, about forty columns; the tests' shared
//! `linux_details`): every host actor keeps its
//! host's record for as long as it lives, so this is paid per host.
//! Counted by an instrumented global allocator of this test binary alone.
#![allow(clippy::unwrap_used)]

use gatehouse_core::model::Host;
use gatehouse_tests::linux_details as details;
use serde_json::{Map, Value, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static ALLOC: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// A stored host record (as the store hands it to the host actor).
fn record(n: u32) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": format!("{n:032x}"), "identity": format!("hw:{n:08X}-1B8C-4B8E-9F43-58B40EE0A2F1"),
        "host_identifier": format!("{n:08X}-1B8C-4B8E-9F43-58B40EE0A2F1"),
        "hostname": format!("host-{n}.example.com"), "platform": "linux", "platform_type": "9",
        "os_name": "Ubuntu", "os_version": "22.04.4 LTS (Jammy Jellyfish)", "osquery_version": "5.23.1",
        "details": details(n), "labels": [], "enrolled_at": 1_717_000_000_000i64,
        "last_enrolled_at": 1_717_000_000_000i64, "enroll_count": 1, "key_epoch": 1, "key_revoked": false,
        "last_seen": 1_717_000_000_000i64, "last_ip": "10.0.0.1", "config_hash": "0".repeat(64),
        "config_generation": 3
    }))
    .unwrap()
}

/// Bytes of heap each of `n` values made by `make` holds.
fn heap_per<T>(n: u32, make: impl Fn(u32) -> T) -> isize {
    let region = Region::new(ALLOC);
    let kept: Vec<T> = (0..n).map(make).collect();
    let vec_itself = (n as usize * std::mem::size_of::<T>()) as isize;
    let c = region.change();
    let net = c.bytes_allocated as isize - c.bytes_deallocated as isize + c.bytes_reallocated;
    let per = (net - vec_itself) / n as isize;
    drop(kept);
    per
}

#[test]
fn a_host_record_holds_its_details_as_text_not_as_a_tree() {
    let records: Vec<Vec<u8>> = (0..1000).map(record).collect();
    let host = heap_per(1000, |n| {
        serde_json::from_slice::<Host>(&records[n as usize]).unwrap()
    });
    let tree = heap_per(1000, |n| {
        serde_json::from_value::<Map<String, Value>>(details(n)).unwrap()
    });
    let text = serde_json::to_vec(&details(0)).unwrap().len() as isize;
    println!(
        "heap per host record: {host} bytes; details as a tree alone: {tree} bytes, as text {text} bytes"
    );
    assert!(host > text, "the record holds its details: {host} bytes");
    assert!(
        host < tree,
        "a whole record ({host} bytes) holds less than its details would as a tree ({tree} bytes)"
    );
}
