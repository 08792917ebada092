#!/usr/bin/env bash
# The full Gatehouse test suite: exactly what CI runs (.ci/run) and what a
# newcomer runs from the README. Every service a test needs is installed
# or started from here (or in-process by the tests themselves).
#
# - The store and bus conformance suites run on the embedded store and the
#   in-process bus; the ScyllaDB adapter's suite runs against a real CQL
#   server started in-process on a random port (the `kassandra` crate,
#   talked to over TCP by the real `scylla` driver: nothing to install).
# - Protocol, bad-input, restart and store end-to-end tests start the
#   all-in-one server in-process over real TLS.
# - ScyllaDB semantics kassandra lacks (clustering ranges, conditional
#   writes, TTL expiry, concurrent migrations) are tested against a real
#   node when GATEHOUSE_TEST_SCYLLA=host:port names one. Without it those
#   tests are reported as NOT RUN, never as passed.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building and running the workspace tests"
cargo test --workspace --locked --no-fail-fast

if [[ -n "${GATEHOUSE_TEST_SCYLLA:-}" ]]; then
    echo "== ScyllaDB semantics against the real node at ${GATEHOUSE_TEST_SCYLLA}"
    cargo test --locked -p gatehouse-store --lib scylla::tests::real_ -- --ignored
else
    echo "== NOT RUN: ScyllaDB semantics tests (scylla::tests::real_*): set GATEHOUSE_TEST_SCYLLA=host:port to run them against a real node"
fi
