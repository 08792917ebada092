#!/usr/bin/env bash
# Reproduces one published benchmark: starts a fresh `gatehouse serve`
# (release build, empty data directory) on this machine, installs the
# typical 12-query schedule, runs the harness with the given arguments, and
# writes result.json, report.md and chart.html to docs/benchmarks/NAME/.
#
#   loadtest/bench.sh NAME [gatehouse-load arguments...]
#   loadtest/bench.sh steady-5k --hosts 5000 --duration 300 --ramp 60
#
# PROFILE=profiling builds the same optimised code with symbols (for
# `perf record -g -p <server pid>`); the default is the stripped release.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: loadtest/bench.sh NAME [gatehouse-load args...]}
shift
profile=${PROFILE:-release}
cargo build --profile "$profile" --locked -p gatehouse -p gatehouse-loadtest
data=$(mktemp -d /tmp/gatehouse-bench.XXXXXX)
out=docs/benchmarks/$name
mkdir -p "$out"
GATEHOUSE_DATA_DIR="$data/data" GATEHOUSE_LISTEN=127.0.0.1:8443 GATEHOUSE_API_LISTEN=127.0.0.1:8444 \
  RUST_LOG=warn target/$profile/gatehouse serve > "$data/server.out" 2> "$data/server.err" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
  [ -s "$data/server.out" ] && break
  sleep 0.1
done
target/$profile/gatehouse-load --gatehouse-data "$data/data" --server-pid "$server" \
  --setup-schedule --out "$out" "$@" | tee "$data/harness.out" > /dev/null
{
  echo
  echo "Built from commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- services loadtest proto || echo ' with local changes')."
  echo "Reproduce with: \`loadtest/bench.sh $name $*\`"
  echo "(a fresh \`gatehouse serve\` release build on 127.0.0.1:8443, then the harness command above)."
} >> "$out/report.md"
echo "report: $out/report.md"
