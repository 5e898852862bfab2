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

# shellcheck source=loadgen/server.sh
source loadgen/server.sh

for allocator in mimalloc system; do
  binary=./target/release/otelscale
  [ "$allocator" = system ] && binary=./target/system-allocator/release/otelscale
  for variant in "grpc:--transport grpc" "http:--transport http" "http-gzip:--transport http --gzip" "http-zstd:--transport http --zstd"; do
    name=${variant%%:*}; flags=${variant#*:}
    start_server "$binary" /tmp/otelscale-dataplane-server.log
    # shellcheck disable=SC2086
    $loadgen throughput $flags --connections 2 --points-per-request 1000 --series 100000 --duration 20s \
      --server-pid "$server_pid" --admin 127.0.0.1:8080 --quiet --report "$out-throughput-$name-$allocator"
    stop_server
  done
done
start_server ./target/release/otelscale /tmp/otelscale-dataplane-server.log
$loadgen latency --background-rate 200000 --samples 500 --quiet --report "$out-latency"
stop_server
