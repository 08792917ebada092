#!/usr/bin/env bash
# The full Gatehouse test suite: exactly what CI runs (.ci/run) and what a
# newcomer runs from the README. It installs nothing by hand-me-down: every
# service a test needs is installed or started from here.
#
# Today's suites need only the Rust toolchain: the store and bus
# conformance suites run on the embedded store and the in-process bus, and
# the protocol, bad-input and restart tests start the all-in-one server
# in-process over real TLS. Suites that need a real nats-server or a CQL
# server add their install steps here when they land (cluster and ScyllaDB
# issues); they never skip silently.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building and running the workspace tests"
cargo test --workspace --locked --no-fail-fast
