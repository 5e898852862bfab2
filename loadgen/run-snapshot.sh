#!/usr/bin/env bash
# Snapshot figures through the real server: fill 1 M series with loadgen (OTLP/HTTP) while
# background snapshots run, stop with SIGTERM (final snapshot), then restart three times and
# report the restore time and the time until /readyz answers.
# Writes perf-reports/<date>-snapshot-fill-throughput.{json,md}; prints the restart figures.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
# shellcheck source=loadgen/server.sh
source loadgen/server.sh
dir=$(mktemp -d)
server=./target/release/otelscale
start_server "$server" /tmp/otelscale-snapshot-fill.log --snapshot-dir "$dir" --snapshot-interval 10s
./target/release/otelscale-loadgen throughput --transport http --connections 2 --points-per-request 1000 \
  --series 1000000 --duration 25s --server-pid "$server_pid" --admin 127.0.0.1:8080 --quiet \
  --report "perf-reports/$(date -u +%F)-snapshot-fill-throughput"
curl -s http://127.0.0.1:8080/metrics | grep -E '^otelscale_(series|snapshot_duration_seconds|snapshot_bytes) '
stop_server
grep "final snapshot written" /tmp/otelscale-snapshot-fill.log
for round in 1 2 3; do
  start=$(date +%s%N)
  start_server "$server" /tmp/otelscale-snapshot-restore.log --snapshot-dir "$dir" --snapshot-interval 1h
  ready_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  echo "round $round: ready after ${ready_ms} ms; $(grep -o 'series=[0-9]* samples=[0-9]*.*duration_ms=[0-9]*' /tmp/otelscale-snapshot-restore.log)"
  stop_server KILL
done
rm -rf "$dir"
