#!/usr/bin/env python3
"""The server's resident memory per agent connection, measured directly.

Opens N TLS connections to the agent port, each sending what an osquery
agent sends on a connection it keeps (HTTP/1.1 keep-alive: a config POST,
then a logger POST of --body-bytes, both with a node key the server does
not know, so nothing is stored and the answers are error bodies), then
leaves them open and idle. The server's RSS (from /proc) is read before,
after the handshakes, after the requests and after all are closed; the
differences divided by N are the bytes each open connection holds.

  loadtest/connection-memory.py --pid PID [--port 8443] [--connections 5000]
      [--body-bytes 20000] [--ca DATA_DIR/tls/ca.pem]

Real agents keep up to three connections each (config, logger,
distributed), so this figure times three bounds what a host's
connections cost; the harness's shared connections hide it.
"""
import argparse
import json
import socket
import ssl
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settle(pid, seconds=3.0):
    """The RSS once it has stopped moving (at most `seconds` of waiting)."""
    last = rss_kb(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = rss_kb(pid)
        if now == last:
            return now
        last = now
    return last


def request(sock, path, body):
    head = (
        f"POST {path} HTTP/1.1\r\nHost: gatehouse\r\n"
        f"Content-Type: application/json\r\nAccept: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)


def read_answer(sock):
    """Reads one HTTP/1.1 answer with a Content-Length; its status line."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        rest += sock.recv(65536)
    return head.split(b"\r\n", 1)[0].decode()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pid", type=int, required=True, help="the server's pid")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--connections", type=int, default=5000)
    p.add_argument("--body-bytes", type=int, default=20000)
    p.add_argument("--ca", help="the server's CA (default: no verification)")
    a = p.parse_args()

    ctx = ssl.create_default_context(cafile=a.ca) if a.ca else ssl._create_unverified_context()
    if not a.ca:
        ctx.check_hostname = False
    base = settle(a.pid)
    socks = []
    for i in range(a.connections):
        raw = socket.create_connection((a.host, a.port))
        socks.append(ctx.wrap_socket(raw, server_hostname="localhost"))
        if (i + 1) % 1000 == 0:
            print(f"  {i + 1} connections open", flush=True)
    handshaken = settle(a.pid)
    config = json.dumps({"node_key": "not-a-known-key"}).encode()
    line = {"name": "processes", "hostIdentifier": "h", "calendarTime": "Mon Dec  7 00:00:00 2026 UTC",
            "unixTime": 1796601600, "epoch": 0, "counter": 0, "numerics": False,
            "columns": {"pid": "1", "name": "init", "path": "/sbin/init"}, "action": "added"}
    lines, size = [], 0
    while size < a.body_bytes:
        lines.append(line)
        size += len(json.dumps(line))
    logger = json.dumps({"node_key": "not-a-known-key", "log_type": "result", "data": lines}).encode()
    for s in socks:
        request(s, "/api/v1/osquery/config", config)
        read_answer(s)
        request(s, "/api/v1/osquery/log", logger)
        read_answer(s)
    used = settle(a.pid)
    for s in socks:
        s.close()
    closed = settle(a.pid, 6.0)
    n = a.connections
    kb = lambda x: f"{x / n * 1024:,.0f} bytes"  # noqa: E731
    print(json.dumps({
        "connections": n,
        "body_bytes": len(logger),
        "rss_kb": {"before": base, "handshaken": handshaken, "after_requests": used, "closed": closed},
    }))
    print(f"per connection: {kb(handshaken - base)} after the handshake, "
          f"{kb(used - base)} after a config and a {len(logger):,}-byte logger POST, "
          f"{kb(closed - base)} still held after all closed")


if __name__ == "__main__":
    main()
