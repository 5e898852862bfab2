#!/usr/bin/env bash
# Whole-server figures for the data-plane report: server CPU-µs per point over gRPC and OTLP/HTTP
# (io_uring), with mimalloc and with the system allocator, gzip bodies, and the latency scenario.
# Writes perf-reports/<date>-dataplane-*.{json,md}. Takes about eight minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
CARGO_TARGET_DIR=target/system-allocator cargo build --release -p otelscale --no-default-features
date=$(date -u +%F)
out="perf-reports/$date-dataplane"
loadgen=./target/release/otelscale-loadgen

start_server() { # $1 = binary
  "$1" serve >"/tmp/otelscale-dataplane-server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    kill -0 "$server_pid" 2>/dev/null || { echo "server exited:" >&2; cat /tmp/otelscale-dataplane-server.log >&2; exit 1; }
    curl -sf http://127.0.0.1:8080/readyz >/dev/null && return
    sleep 0.1
  done
  echo "server did not start" >&2; exit 1
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || true; }

for allocator in mimalloc system; do
  binary=./target/release/otelscale
  [ "$allocator" = system ] && binary=./target/system-allocator/release/otelscale
  for variant in "grpc:--transport grpc" "http:--transport http" "http-gzip:--transport http --gzip" "http-zstd:--transport http --zstd"; do
    name=${variant%%:*}; flags=${variant#*:}
    start_server "$binary"
    # shellcheck disable=SC2086
    $loadgen throughput $flags --connections 2 --points-per-request 1000 --series 100000 --duration 20s \
      --server-pid "$server_pid" --admin 127.0.0.1:8080 --quiet --report "$out-throughput-$name-$allocator"
    stop_server
  done
done
start_server ./target/release/otelscale
$loadgen latency --background-rate 200000 --samples 500 --quiet --report "$out-latency"
stop_server
