#!/usr/bin/env bash
# Compares two harness binaries under the same load at the same moment:
# one fresh `gatehouse serve` (release build, empty data directory), and
# both harnesses started together, each simulating half the hosts, so
# each meets the same server, the same ramp and the same stalls. Each
# harness reports its own CPU and memory per simulated host; the reports
# go to docs/benchmarks/NAME/a and .../b.
#
#   loadtest/harness-ab.sh NAME A_BIN B_BIN [gatehouse-load arguments...]
#   loadtest/harness-ab.sh harness-ab-20k /tmp/old-load target/release/gatehouse-load \
#     --hosts 10000 --connections 3000 --duration 180 --ramp 60
#
# The host and connection counts are per harness (the server sees twice
# as many). SERVER_BIN and BENCH_PORT as in bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: loadtest/harness-ab.sh NAME A_BIN B_BIN [gatehouse-load args...]}
a_bin=${2:?A_BIN}
b_bin=${3:?B_BIN}
shift 3
cargo build --release --locked -p gatehouse
server_bin=${SERVER_BIN:-target/release/gatehouse}
out=docs/benchmarks/$name
mkdir -p "$out/a" "$out/b"
# shellcheck source=loadtest/serve.sh
. loadtest/serve.sh
start_server "$server_bin"
# A installs the typical schedule; B starts once it is there (well under
# a second later) and finds it installed.
"$a_bin" --gatehouse-data "$data/data" --server-pid "$server" --setup-schedule --quiet --out "$out/a" "$@" \
  > "$data/a.out" 2> "$data/a.err" &
a=$!
for _ in $(seq 1 300); do
  grep -q "simulated hosts" "$data/a.err" 2>/dev/null && break
  sleep 0.1
done
"$b_bin" --gatehouse-data "$data/data" --server-pid "$server" --setup-schedule --quiet --out "$out/b" "$@" \
  > "$data/b.out" 2> "$data/b.err" &
b=$!
wait "$a"
wait "$b"
for side in a b; do
  bin=$a_bin
  [ "$side" = b ] && bin=$b_bin
  {
    echo
    echo "Harness binary: \`$bin\`, run beside the other of [\`$name\`](../README.md) against one server."
    echo "Built from commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- services loadtest proto || echo ' with local changes')."
    echo "Reproduce with: \`loadtest/harness-ab.sh $name A_BIN B_BIN $*\`"
  } >> "$out/$side/report.md"
done
{
  echo "# Two harnesses side by side: $name"
  echo
  echo "| | harness | CPU-ms per simulated host-minute | bytes of RSS per simulated host | server CPU-ms per host-minute (both) |"
  echo "|---|---|---|---|---|"
  for side in a b; do
    bin=$a_bin
    [ "$side" = b ] && bin=$b_bin
    h=$(grep -E '^- Harness:' "$out/$side/report.md" | sed -E 's/.*, ([0-9.]+) CPU-ms per simulated host per minute.*\(([0-9]+) bytes per host\).*/\1 | \2/')
    s=$(grep -E '^- Server' "$out/$side/report.md" | sed -E 's/.*, ([0-9.]+) CPU-ms per host per minute.*/\1/')
    echo "| $side | \`$bin\` | $h | $s |"
  done
  echo
  echo "Reproduce with: \`loadtest/harness-ab.sh $name A_BIN B_BIN $*\` (host and connection counts per harness)."
  echo "The server CPU per host-minute each harness reports counts both harnesses' hosts' load against its own host count: halve it for the server's cost per host."
} > "$out/README.md"
cat "$out/README.md"
