#!/usr/bin/env bash
# The `triggers` scenario against a fresh release server on this machine:
# `run-triggers.sh LABEL [LOADGEN FLAGS...]` writes perf-reports/<date>-triggers-<label>.{json,md}
# (or $TRIGGERS_REPORT.{json,md}), e.g. `run-triggers.sh 2000-streams` (the fleet-scale issue's
# first target: 2,000 models × 8 pods, 50 requests per second, 2,000 streams) or
# `run-triggers.sh 10k-polled --streams 0 --polled-triggers 10000 --duration 45s`.
# A server binary other than this tree's in $TRIGGERS_SERVER (to measure an older build);
# $TRIGGERS_BIN_DIR: take both binaries from there and build nothing (A/B runs of saved builds
# while the tree changes).
set -euo pipefail
cd "$(dirname "$0")/.."
bin_dir=${TRIGGERS_BIN_DIR:-./target/release}
if [[ -z ${TRIGGERS_BIN_DIR:-} ]]; then
  cargo build --release --workspace
fi
label=${1:-run}
shift || true
out=${TRIGGERS_REPORT:-"perf-reports/$(date -u +%F)-triggers-$label"}
# shellcheck source=loadgen/server.sh
source loadgen/server.sh
start_server "${TRIGGERS_SERVER:-$bin_dir/otelscale}" /tmp/otelscale-triggers-server.log
trap 'stop_server' EXIT
"$bin_dir/otelscale-loadgen" triggers --server-pid "$server_pid" --quiet --report "$out" "$@"
