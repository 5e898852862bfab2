#!/usr/bin/env bash
# The hostile scenario against a fresh release server on this machine: an idle baseline, then
# each attack of the hardening issue for 20 s, with GetMetrics, /healthz, a small export and the
# server's RSS and CPU measured before and during each. Writes
# perf-reports/<date>-hostile-<label>.{json,md} (or $HOSTILE_REPORT.{json,md});
# usage: run-hostile.sh [LABEL [LOADGEN FLAGS...]], e.g. `run-hostile.sh before` or
# `run-hostile.sh skew-9s --attack future-point --future-offset 9s`.
#
# The server runs OTLP/HTTP on epoll (--io-uring off) like the issue's row 1, with
# --max-series 200000 so that the flood fills the store in seconds. Caps for a shared machine:
# one zstd body (the issue sent two and the server reached 9.3 GB), an attack stops when the
# server's RSS passes 4 GiB, and a watchdog kills the server if it passes 8 GiB anyway.
# Takes five to ten minutes: each attack 20 s, then up to 180 s for the server to settle (an
# unhardened server may still be digesting a bomb for a minute or two after its attack ends).
# $HOSTILE_BIN_DIR: take both binaries from there and build nothing (A/B runs of saved builds).
set -euo pipefail
cd "$(dirname "$0")/.."
bin_dir=${HOSTILE_BIN_DIR:-./target/release}
if [[ -z ${HOSTILE_BIN_DIR:-} ]]; then
  cargo build --release --workspace
fi
label=${1:-run}
shift || true
out=${HOSTILE_REPORT:-"perf-reports/$(date -u +%F)-hostile-$label"}
# 4096 idle sockets to each of two ports and 4096 dripping ones: both ends need the descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# shellcheck source=loadgen/server.sh
source loadgen/server.sh
# Extra server flags in HOSTILE_SERVER_FLAGS (e.g. a larger --max-series-key-bytes, so that the
# large-label attacks reach the decoder and the store instead of being refused at the door).
# --max-series-per-metric keeps the defaults' ratio to --max-series (1 to 4).
# shellcheck disable=SC2086
start_server "$bin_dir/otelscale" /tmp/otelscale-hostile-server.log --io-uring off --max-series 200000 \
  --max-series-per-metric 50000 ${HOSTILE_SERVER_FLAGS:-}

rss_kill_kib=$((8 * 1024 * 1024))
(
  while kill -0 "$server_pid" 2>/dev/null; do
    rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$server_pid/status" 2>/dev/null || echo 0)
    if [ "${rss_kib:-0}" -gt "$rss_kill_kib" ]; then
      echo "watchdog: server RSS ${rss_kib} KiB passed 8 GiB; killing it" >&2
      kill -KILL "$server_pid"
    fi
    sleep 0.1
  done
) &
watchdog_pid=$!

# Whatever happens to the run: stop the watchdog and the server (SIGKILL if SIGTERM takes over 30 s).
finish() {
  kill "$watchdog_pid" 2>/dev/null || true
  kill -TERM "$server_pid" 2>/dev/null || true
  for _ in $(seq 300); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}
trap finish EXIT

"$bin_dir/otelscale-loadgen" hostile --server-pid "$server_pid" --admin 127.0.0.1:8080 \
  --zstd-bodies 1 --rss-stop-mib 4096 --settle-timeout 180s --quiet --report "$out" "$@"
