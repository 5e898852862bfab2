#!/usr/bin/env bash
# Runs every loadgen scenario against a fresh release server on this machine and writes the
# reports to perf-reports/<date>-baseline-*.{json,md}. Takes about six minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
date=$(date -u +%F)
out="perf-reports/$date-baseline"
loadgen=./target/release/otelscale-loadgen

# shellcheck source=loadgen/server.sh
source loadgen/server.sh

$loadgen throughput --sink --duration 5s --quiet --report "$out-sink"
for variant in "grpc:--transport grpc" "http:--transport http" "grpc-gzip:--transport grpc --gzip" "http-gzip:--transport http --gzip"; do
  name=${variant%%:*}; flags=${variant#*:}
  start_server ./target/release/otelscale /tmp/otelscale-baseline-server.log   # a fresh server per run, so each RSS figure is its own
  # shellcheck disable=SC2086
  $loadgen throughput $flags --connections 2 --points-per-request 1000 --series 100000 --duration 20s \
    --server-pid "$server_pid" --admin 127.0.0.1:8080 --quiet --report "$out-throughput-$name"
  stop_server
done
start_server ./target/release/otelscale /tmp/otelscale-baseline-server.log
$loadgen latency --background-rate 200000 --samples 500 --quiet --report "$out-latency"
$loadgen latency --background-rate 0 --samples 500 --quiet --report "$out-latency-idle"
$loadgen gpu-fleet --nodes 50 --gpus-per-node 8 --duration 30s --quiet --report "$out-gpu-fleet"
$loadgen gpu-fleet --nodes 1000 --gpus-per-node 8 --duration 30s --quiet --report "$out-gpu-fleet-1000x8"
$loadgen scale-sim --quiet --report "$out-scale-sim"
$loadgen scale-sim --hpa-sync-interval 1s --hold 15s --quiet --report "$out-scale-sim-hpa-1s"
stop_server
