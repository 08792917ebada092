# Sourced by loadtest/bench.sh and loadtest/harness-ab.sh: starts a fresh
# `gatehouse serve` for one benchmark run.
#
#   start_server BIN
#
# serves with BIN on an empty data directory ($data/data), agents on
# BENCH_PORT (default 8443), operators on the next port and metrics on the
# one after, and returns once it is listening. Sets $data and $server, and
# stops the server and removes $data when the script exits.
start_server() {
  local bin=$1 port=${BENCH_PORT:-8443}
  data=$(mktemp -d /tmp/gatehouse-bench.XXXXXX)
  GATEHOUSE_DATA_DIR="$data/data" GATEHOUSE_LISTEN=127.0.0.1:$port GATEHOUSE_API_LISTEN=127.0.0.1:$((port + 1)) \
    GATEHOUSE_OPS_LISTEN=127.0.0.1:$((port + 2)) RUST_LOG=warn "$bin" serve > "$data/server.out" 2> "$data/server.err" &
  server=$!
  # Under `set -e` a failing command ends the trap: the server is usually
  # gone by now, so neither kill nor wait may fail, or the data directory
  # (gigabytes after a long run) is left behind and the script exits 1.
  trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$data"' EXIT
  for _ in $(seq 1 100); do
    [ -s "$data/server.out" ] && break
    sleep 0.1
  done
}
