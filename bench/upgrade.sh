#!/usr/bin/env bash
# Binary upgrades under load (SPEC §12, issue 17): wrk keeps C keep-alive
# connections busy against moongate (proxying to the bench's nginx origin,
# bench/nginx/origin.conf, /hello) while `moongate upgrade` hands the server
# over to a new process N times in a row. Every request must succeed: the
# script prints wrk's figures and exits 1 on any non-2xx answer or socket
# error, or if an upgrade fails. Loopback only (127.0.0.1).
#
#   bench/upgrade.sh [--moongate PATH] [--upgrades N] [--connections C]
#                    [--threads T] [--interval SECONDS] [--workers W]
#
# Defaults: target/release/moongate, 20 upgrades, wrk -t2 -c50, one upgrade
# every 1 s (after the previous one finished), moongate workers = 2.
# Needs nginx and wrk on PATH (/usr/sbin is searched too) and python3.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MOONGATE="$ROOT/target/release/moongate"
UPGRADES=20
CONNECTIONS=50
THREADS=2
INTERVAL=1
WORKERS=2
while [ $# -gt 0 ]; do
    case "$1" in
        --moongate) MOONGATE="$2"; shift 2 ;;
        --upgrades) UPGRADES="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --interval) INTERVAL="$2"; shift 2 ;;
        --workers) WORKERS="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
export PATH="$PATH:/usr/sbin"
for tool in nginx wrk python3; do
    command -v "$tool" >/dev/null || { echo "upgrade.sh needs $tool on PATH" >&2; exit 2; }
done
[ -x "$MOONGATE" ] || { echo "no moongate binary at $MOONGATE (cargo build --release)" >&2; exit 2; }
MOONGATE="$(cd "$(dirname "$MOONGATE")" && pwd)/$(basename "$MOONGATE")"

RUN="$(mktemp -d /tmp/moongate-upgrade-bench.XXXXXX)"
NGINX_PID=""
cleanup() {
    # Only the processes this script started, by pid.
    if [ -f "$RUN/conf.d/moongate.pid" ]; then
        kill -TERM "$(cat "$RUN/conf.d/moongate.pid")" 2>/dev/null || true
    fi
    [ -n "$NGINX_PID" ] && kill -TERM "$NGINX_PID" 2>/dev/null || true
    sleep 1
    rm -rf "$RUN"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The origin: the bench's nginx, one worker.
ORIGIN="127.0.0.1:$(free_port)"
mkdir -p "$RUN/origin/logs" "$RUN/conf.d"
: > "$RUN/origin/page.html"
sed -e "s|@ORIGIN_LISTEN@|$ORIGIN|" -e "s|@PAGE_FILE@|$RUN/origin/page.html|" \
    "$ROOT/bench/nginx/origin.conf" > "$RUN/origin/origin.conf"
nginx -p "$RUN/origin" -c "$RUN/origin/origin.conf" -e "$RUN/origin/logs/error.log" &
NGINX_PID=$!

# moongate: port 0, found in its log; a pid file for `moongate upgrade`.
cat > "$RUN/conf.d/00-bench.toml" <<EOF
[server]
listen = ["127.0.0.1:0"]
workers = $WORKERS
access_log = "off"
keepalive_timeout = "75s"
pid_file = "$RUN/conf.d/moongate.pid"

[upstream.origin]
keepalive = 64
servers = [ { addr = "$ORIGIN" } ]

[[route]]
path = "/"
upstream = "origin"
EOF
LOG="$RUN/moongate.log"
"$MOONGATE" run -c "$RUN/conf.d" 2> "$LOG" &
FIRST=$!
for _ in $(seq 100); do
    grep -q "moongate ready" "$LOG" && break
    sleep 0.1
done
ADDR="$(grep -o 'listening on http://[0-9.:]*' "$LOG" | head -1 | sed 's|listening on http://||')"
[ -n "$ADDR" ] || { echo "moongate did not start:" >&2; cat "$LOG" >&2; exit 1; }
python3 - "$ADDR" <<'PY'
import sys, time, urllib.request
for _ in range(50):
    try:
        urllib.request.urlopen(f"http://{sys.argv[1]}/hello", timeout=2).read()
        break
    except OSError:
        time.sleep(0.1)
PY

# wrk runs until the upgrades are done and 3 s more (SIGINT makes it stop
# and print its figures); the duration is only a bound.
echo "wrk -t$THREADS -c$CONNECTIONS --latency http://$ADDR/hello during $UPGRADES upgrades (pid $FIRST first)"
wrk -t"$THREADS" -c"$CONNECTIONS" -d600s --latency "http://$ADDR/hello" > "$RUN/wrk.txt" &
WRK=$!
sleep 2
failed=0
START=$(date +%s)
for i in $(seq "$UPGRADES"); do
    if ! out="$("$MOONGATE" upgrade -c "$RUN/conf.d" 2>&1)"; then
        echo "upgrade $i failed: $out" >&2
        failed=1
        break
    fi
    echo "upgrade $i: $out"
    sleep "$INTERVAL"
done
END=$(date +%s)
sleep 3
kill -INT "$WRK"
wait "$WRK" || true
cat "$RUN/wrk.txt"

# The servers that handed over are gone: only the last one runs.
SERVING="$(cat "$RUN/conf.d/moongate.pid")"
LEFT="$(grep -o 'moongate ready (pid [0-9]*' "$LOG" | grep -o '[0-9]*$' | while read -r pid; do
    [ "$pid" != "$SERVING" ] && [ -d "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" && echo "$pid"
done || true)"

requests="$(awk '/requests in/ {print $1}' "$RUN/wrk.txt")"
non2xx="$(awk '/Non-2xx or 3xx responses/ {print $NF}' "$RUN/wrk.txt")"
socket="$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$RUN/wrk.txt")"
echo "---"
echo "upgrades: $UPGRADES in $((END - START)) s; serving pid $SERVING (first $FIRST)"
echo "requests: ${requests:-0}; non-2xx: ${non2xx:-0}; socket errors: ${socket:-0}"
if [ -n "$LEFT" ]; then
    echo "old processes still running: $LEFT" >&2
    failed=1
fi
if [ "$failed" != 0 ] || [ "${non2xx:-0}" != 0 ] || [ "${socket:-0}" != 0 ]; then
    exit 1
fi
