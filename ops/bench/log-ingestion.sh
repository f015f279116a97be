#!/usr/bin/env bash
# Log ingestion of one step printing as fast as it can: LINES lines of 80
# bytes (default 1,250,000 = 100 MB). Starts a master with the embedded
# database in a temporary directory, forces one build, and prints lines/s,
# MB/s (from the step's start to its last line stored) and the master's
# peak RSS.
#
#   cargo build --release && ops/bench/log-ingestion.sh
#   BUILDMASTER=target/debug/buildmaster LINES=100000 ops/bench/log-ingestion.sh
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
bin="$(realpath "${BUILDMASTER:-$here/target/release/buildmaster}")"
lines="${LINES:-1250000}"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
work="$(mktemp -d /tmp/bm-logbench.XXXXXX)"
chmod 755 "$work" # the embedded server may run as another user
trap 'kill "$master" 2>/dev/null; wait "$master" 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
cat > buildmaster.toml <<TOML
[http]
listen = "127.0.0.1:$port"
[[workers]]
name = "local"
[[builders]]
name = "chatty"
workers = ["local"]
[[builders.steps]]
name = "print"
command = "yes \$(printf '%079d' 0) | head -n $lines"
timeout_s = 3600
[[schedulers]]
name = "force"
kind = "force"
builders = ["chatty"]
TOML
RUST_LOG=warn "$bin" up > master.log 2>&1 &
master=$!
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break
    kill -0 "$master" 2>/dev/null || { cat master.log; exit 1; }
    sleep 0.2
done
started="$(date +%s.%N)"
"$bin" force --master "http://127.0.0.1:$port" chatty > /dev/null
export PGPASSFILE="$work/.buildmaster/pgpass"
psql_q() { psql -X -qAt -h 127.0.0.1 -p "$(cat .buildmaster/postgres.port)" -U buildmaster buildmaster -c "$1"; }
until [ "$(psql_q "SELECT count(*) FROM buildmaster_v1.builds WHERE complete")" = "1" ]; do sleep 0.1; done
ended="$(date +%s.%N)"
seconds="$(psql_q "SELECT extract(epoch FROM finished_at - started_at) FROM buildmaster_v1.steps WHERE name = 'print'")"
stored="$(psql_q "SELECT num_lines - 1 FROM buildmaster_v1.logs")"
bytes="$(psql_q "SELECT sum(length(content) + 1) FROM buildmaster_private.log_chunks")"
peak_kb="$(awk '/VmHWM/ {print $2}' "/proc/$master/status")"
python3 - "$lines" "$stored" "$seconds" "$bytes" "$peak_kb" "$started" "$ended" <<'PY'
import sys
lines, stored, seconds, stored_bytes, peak_kb = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
wall = float(sys.argv[7]) - float(sys.argv[6])
mb = lines * 80 / 1e6
print(f"lines printed      {lines:>12,}")
print(f"lines stored       {stored:>12,}")
print(f"step duration      {seconds:>12.2f} s  (the process, as recorded)")
print(f"force -> stored    {wall:>12.2f} s  (until the build's record was complete)")
print(f"throughput         {lines / wall:>12,.0f} lines/s  {mb / wall:8.1f} MB/s")
print(f"stored bytes       {stored_bytes:>12,}")
print(f"master peak RSS    {peak_kb / 1024:>12.1f} MiB")
if stored != lines:
    sys.exit(f"lost lines: {lines - stored}")
PY
