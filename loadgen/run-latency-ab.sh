#!/usr/bin/env bash
# Push → visible at 200k points/s for two server builds in one run, alternating, so that the
# machine's drift hits both alike: `run-latency-ab.sh BEFORE_BINARY [ROUNDS]` compares
# BEFORE_BINARY with this tree's release build. Writes
# perf-reports/<date>-latency-ab-{before,after}-<round>.{json,md} (or
# $LATENCY_AB_REPORT-{before,after}-<round>.{json,md}).
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?usage: run-latency-ab.sh BEFORE_BINARY [ROUNDS]}
rounds=${2:-3}
cargo build --release --workspace
out=${LATENCY_AB_REPORT:-"perf-reports/$(date -u +%F)-latency-ab"}
loadgen=./target/release/otelscale-loadgen
# shellcheck source=loadgen/server.sh
source loadgen/server.sh
for round in $(seq "$rounds"); do
  for variant in "before:$before" "after:./target/release/otelscale"; do
    name=${variant%%:*}; binary=${variant#*:}
    start_server "$binary" /tmp/otelscale-latency-ab-server.log
    $loadgen latency --background-rate 200000 --samples 500 --quiet --report "$out-$name-$round"
    stop_server
  done
done
