# Sourced by the run-*.sh scripts: start and stop a release server on the default ports.
#
# start_server BINARY LOG [SERVE FLAGS...]: starts `BINARY serve FLAGS`, logging to LOG, and
# waits (up to 20 s, long enough for a snapshot restore) until /readyz answers. It stops the
# script if another server already answers on the admin port, or if the new one exits first:
# measuring a stale server by mistake is worse than failing. Sets server_pid.
start_server() {
  local binary=$1 log=$2
  shift 2
  if curl -sf http://127.0.0.1:8080/readyz >/dev/null; then
    echo "a server already answers on 127.0.0.1:8080; stop it first" >&2; exit 1
  fi
  "$binary" serve "$@" >"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 2000); do
    kill -0 "$server_pid" 2>/dev/null || { echo "server exited:" >&2; cat "$log" >&2; exit 1; }
    curl -sf http://127.0.0.1:8080/readyz >/dev/null && return
    sleep 0.01
  done
  echo "server did not become ready" >&2; exit 1
}

# stop_server [SIGNAL]: stops the server started last (SIGTERM by default) and waits for it.
stop_server() {
  kill "-${1:-TERM}" "$server_pid"
  wait "$server_pid" 2>/dev/null || true
}
