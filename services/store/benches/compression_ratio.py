#!/usr/bin/env python3
"""Compression ratio of `result_logs.doc` blobs as ScyllaDB would store them.

Builds 2,100 documents shaped exactly like the adapter's (a `ResultLog` as
JSON: the typical `processes` event line with decorations; 642 bytes each,
the size `cargo bench -p gatehouse-store --bench scylla_cost` reports),
in partition order (one host-day, sorted by name and time), and compresses
them in SSTable-sized chunks with LZ4 (ScyllaDB's default compressor) and
Zstd level 1.

Run: pip install lz4 zstandard && python3 services/store/benches/compression_ratio.py
"""
import hashlib
import json
import random

import lz4.block
import zstandard

random.seed(1)
host = hashlib.sha256(b"hw:x").hexdigest()[:32]
rows = []
t0 = 1717496431
for r in range(300):
    for i in range(7):
        line = {
            "name": "pack_inventory_processes", "hostIdentifier": "web-01",
            "calendarTime": "Tue Jun  4 10:20:31 2024 UTC", "unixTime": t0 + 60 * r,
            "epoch": 0, "counter": r, "numerics": False,
            "decorations": {"host_uuid": host, "hostname": "web-01.example.com"},
            "columns": {
                "pid": str(random.randint(1000, 99999)),
                "name": random.choice(["sshd", "bash", "python3", "cron", "nginx"]),
                "path": "/usr/sbin/sshd", "cmdline": "/usr/sbin/sshd -D", "uid": "0",
                "resident_size": str(random.randint(10**6, 10**8)),
            },
            "action": random.choice(["added", "removed"]),
        }
        canon = json.dumps(line, sort_keys=True, separators=(",", ":"))
        line_id = hashlib.sha256(canon.encode()).hexdigest()[:32] + "-0"
        doc = {
            "host_id": host, "name": line["name"], "unix_time": line["unixTime"],
            "kind": "event", "action": line["action"], "rows": 1, "line_id": line_id,
            "received_at": (t0 + 60 * r) * 1000 + 500, "line": line,
        }
        rows.append(json.dumps(doc, separators=(",", ":")).encode())
data = b"".join(rows)
print(f"documents: {len(rows)}, average {len(data) // len(rows)} bytes")
for chunk in (4096, 16384, 65536):
    size = sum(len(lz4.block.compress(data[i:i + chunk], store_size=False))
               for i in range(0, len(data), chunk))
    print(f"LZ4, {chunk // 1024} KiB chunks: {len(data) / size:.2f}x")
for chunk in (4096, 16384):
    c = zstandard.ZstdCompressor(level=1)
    size = sum(len(c.compress(data[i:i + chunk])) for i in range(0, len(data), chunk))
    print(f"Zstd 1, {chunk // 1024} KiB chunks: {len(data) / size:.2f}x")
