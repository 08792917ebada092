//! The heap a host record holds, with `host_details` of the size osquery
//! sends (three tables, about fifty columns): every host actor keeps its
//! host's record for as long as it lives, so this is paid per host.
//! Counted by an instrumented global allocator of this test binary alone.
#![allow(clippy::unwrap_used)]

use gatehouse_core::model::Host;
use serde_json::{Map, Value, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static ALLOC: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// `host_details` as an Ubuntu agent sends them (the load harness's
/// template, `loadtest/src/osinfo.rs`).
fn details(n: usize) -> Value {
    json!({
        "os_version": {"arch": "x86_64", "build": "", "codename": "jammy", "major": "22", "minor": "4",
            "name": "Ubuntu", "patch": "0", "pid_with_namespace": "0", "platform": "ubuntu",
            "platform_like": "debian", "version": "22.04.4 LTS (Jammy Jellyfish)"},
        "osquery_info": {"build_distro": "centos7", "build_platform": "ubuntu", "config_hash": "",
            "config_valid": "0", "extensions": "active", "instance_id": format!("{n:08x}-58b4-4b8e-9f43-1b8c0ee0a2f1"),
            "pid": "4242", "platform_mask": "9", "start_time": "1717000000",
            "uuid": format!("{n:08X}-1B8C-4B8E-9F43-58B40EE0A2F1"), "version": "5.23.1", "watcher": "900"},
        "system_info": {"board_model": "", "board_serial": "", "board_vendor": "", "board_version": "",
            "computer_name": format!("host-{n}"), "cpu_brand": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
            "cpu_logical_cores": "8", "cpu_microcode": "0xd0003d1", "cpu_physical_cores": "4",
            "cpu_sockets": "1", "cpu_subtype": "106", "cpu_type": "x86_64", "hardware_model": "m6i.2xlarge",
            "hardware_serial": format!("SN{n:010X}"), "hardware_vendor": "Amazon EC2", "hardware_version": "",
            "hostname": format!("host-{n}.example.com"), "local_hostname": format!("host-{n}"),
            "physical_memory": "34359738368", "uuid": format!("{n:08X}-1B8C-4B8E-9F43-58B40EE0A2F1")}
    })
}

/// A stored host record (as the store hands it to the host actor).
fn record(n: usize) -> Vec<u8> {
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
fn heap_per<T>(n: usize, make: impl Fn(usize) -> T) -> isize {
    let region = Region::new(ALLOC);
    let kept: Vec<T> = (0..n).map(make).collect();
    let vec_itself = (n * std::mem::size_of::<T>()) as isize;
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
        serde_json::from_slice::<Host>(&records[n]).unwrap()
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
