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
# `perf record -g -p <server pid>`); the default is the release build
# (debug info stripped, function symbols kept).
#
# SERVER_BIN=path serves with another `gatehouse` binary (for example one
# built from an earlier commit: `git worktree add /tmp/before <commit> &&
# cargo build --release -p gatehouse --manifest-path /tmp/before/Cargo.toml`)
# so one harness drives both servers; the report names it.
#
# GATEHOUSE_CONFIG=path starts the server with that configuration file
# (for example loadtest/configs/many-campaigns.toml); the report names it.
#
# PERF_AT=S PERF_SECS=N records `perf record -F 199 -g` of the server (and
# of the harness) for N seconds starting S seconds into the run, and writes
# the flat profiles (self time per function, per shared object and per
# thread) as perf-server.txt and perf-harness.txt next to the report;
# PERF_KEEP=DIR also keeps the recordings there (server.perf, harness.perf)
# for call graphs.
#
# BENCH_PORT=P serves agents on P, operators on P+1 and metrics on P+2
# (default 8443), so a run can go beside another server on this machine.
#
# The kernel's TCP counters that explain slow connects (listen-queue
# overflows and drops, SYN retransmissions) are reported as their change
# over the run, and the server's own request metrics at the end of the
# run are kept as server-metrics.txt (agent requests by endpoint and
# outcome, their latency histogram, the store's calls), to set beside the
# harness's latencies.
#
# The server's warnings and errors (throttled: one line per kind and
# interval, with how many were left out) are kept as server-log.txt, so a
# report's error bodies can be traced to what the server refused and why.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: loadtest/bench.sh NAME [gatehouse-load args...]}
shift
profile=${PROFILE:-release}
cargo build --profile "$profile" --locked -p gatehouse -p gatehouse-loadtest
server_bin=${SERVER_BIN:-target/$profile/gatehouse}
out=docs/benchmarks/$name
mkdir -p "$out"
# shellcheck source=loadtest/serve.sh
. loadtest/serve.sh
start_server "$server_bin"
# TcpExt counters from /proc/net/netstat, as "name value" lines.
tcp_counters() {
  awk '/^TcpExt:/ { if (!n) { for (i = 2; i <= NF; i++) k[i] = $i; n = 1 } else { for (i = 2; i <= NF; i++) print k[i], $i } }' /proc/net/netstat | sort
}
tcp_counters > "$data/tcp.before"
target/$profile/gatehouse-load --gatehouse-data "$data/data" --server-pid "$server" \
  --setup-schedule --out "$out" "$@" > "$data/harness.out" &
harness=$!
if [ -n "${PERF_AT:-}" ]; then
  secs=${PERF_SECS:-40}
  (
    set +e +o pipefail
    sleep "$PERF_AT"
    perf record -F 199 -g -o "$data/server.perf" -p "$server" -- sleep "$secs" 2> /dev/null &
    perf record -F 199 -g -o "$data/harness.perf" -p "$harness" -- sleep "$secs" 2> /dev/null &
    wait
    # PERF_KEEP=DIR keeps the recordings, for call graphs (perf report -g).
    [ -n "${PERF_KEEP:-}" ] && mkdir -p "$PERF_KEEP" && cp "$data"/*.perf "$PERF_KEEP"/
    for who in server harness; do
      {
        echo "# perf record -F 199 -g -p <$who pid> -- sleep $secs, started ${PERF_AT}s into the run"
        echo "# flat profile: self time per function (perf report --no-children --sort symbol)"
        perf report -i "$data/$who.perf" --stdio --no-children --sort symbol -g none 2> /dev/null \
          | grep -v '^#' | grep -v '^$' | sed -E 's/ {2,}/  /g; s/ +- +- *$//; s/ +$//' | head -60
        echo
        echo "# by shared object (perf report --no-children --sort dso)"
        perf report -i "$data/$who.perf" --stdio --no-children --sort dso -g none 2> /dev/null \
          | grep -v '^#' | grep -v '^$' | sed -E 's/ {2,}/  /g; s/ +- +- *$//; s/ +$//' | head -12
        echo
        echo "# by thread (perf report --no-children --sort comm): the store's threads apart from the runtime's"
        perf report -i "$data/$who.perf" --stdio --no-children --sort comm -g none 2> /dev/null \
          | grep -v '^#' | grep -v '^$' | sed -E 's/ {2,}/  /g; s/ +- +- *$//; s/ +$//' | head -20
      } > "$out/perf-$who.txt"
    done
  ) &
  profiler=$!
fi
wait "$harness"
[ -n "${profiler:-}" ] && wait "$profiler"
tcp_counters > "$data/tcp.after"
curl -s --max-time 10 "http://127.0.0.1:$((${BENCH_PORT:-8443} + 2))/metrics" \
  | grep -E '^gatehouse_(edge|store)_request' > "$out/server-metrics.txt" || true
sed -E 's/\x1b\[[0-9;]*m//g' "$data/server.err" | grep -E ' (WARN|ERROR) ' | head -400 > "$out/server-log.txt" || true
{
  echo
  echo "Kernel TCP counters over the run (listen-queue overflows send clients into SYN retransmission, 1 s, 3 s, 7 s...):"
  echo
  join "$data/tcp.before" "$data/tcp.after" | awk '$1 ~ /^(ListenOverflows|ListenDrops|TCPSynRetrans|TCPReqQFullDrop|SyncookiesSent|TCPTimeouts|TCPAbortOnData)$/ { printf "- %s: %d\n", $1, $3 - $2 }'
  echo
  echo "Built from commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- services loadtest proto || echo ' with local changes')."
  env=""
  [ -n "${SERVER_BIN:-}" ] && env="SERVER_BIN=$SERVER_BIN "
  [ -n "${GATEHOUSE_CONFIG:-}" ] && env="${env}GATEHOUSE_CONFIG=$GATEHOUSE_CONFIG "
  [ -n "${PERF_AT:-}" ] && env="${env}PERF_AT=$PERF_AT PERF_SECS=${PERF_SECS:-40} "
  echo "Reproduce with: \`${env}loadtest/bench.sh $name $*\`"
  echo "(a fresh \`gatehouse serve\` release build on 127.0.0.1:8443, then the harness command above)."
  # A server that does not stop on SIGTERM is a defect worth a line (a
  # stuck store once held every writer forever, ADR 0036).
  kill -TERM "$server" 2>/dev/null || true
  stopped=""
  for i in $(seq 1 600); do
    if ! kill -0 "$server" 2>/dev/null; then stopped=$((i / 10)); break; fi
    sleep 0.1
  done
  if [ -n "$stopped" ]; then
    echo "The server stopped within $((stopped + 1)) s of SIGTERM."
  else
    echo "**The server did not stop within 60 s of SIGTERM** (killed)."
    kill -KILL "$server" 2>/dev/null || true
  fi
} >> "$out/report.md"
echo "report: $out/report.md"
