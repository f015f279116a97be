#!/usr/bin/env bash
# Fuzzes the HTTP API from its own OpenAPI document with schemathesis
# (PyPI), against a master with the embedded database in a temporary
# directory. Fails if any request gets a 5xx (other than the 503 the API
# documents for an unreachable database) or an undocumented status.
#
#   cargo build && ops/fuzz-api.sh            # EXAMPLES=100 for a longer run
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="$(realpath "${BUILDMASTER:-$here/target/debug/buildmaster}")"
venv="${FUZZ_VENV:-$here/target/fuzz-venv}"
examples="${EXAMPLES:-50}"
if [ ! -x "$venv/bin/st" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q schemathesis
fi
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
work="$(mktemp -d /tmp/bm-fuzz.XXXXXX)"
chmod 755 "$work"
trap 'kill "$master" 2>/dev/null; wait "$master" 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
cat > buildmaster.toml <<TOML
[http]
listen = "127.0.0.1:$port"
[[workers]]
name = "local"
max_builds = 4
[[builders]]
name = "unit"
workers = ["local"]
[[builders.steps]]
name = "test"
command = ["true"]
[[schedulers]]
name = "force"
kind = "force"
builders = ["unit"]
TOML
RUST_LOG=warn "$bin" up > master.log 2>&1 &
master=$!
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break
    kill -0 "$master" 2>/dev/null || { cat master.log; exit 1; }
    sleep 0.2
done
# Some history so that reads return rows.
for _ in 1 2 3; do "$bin" force --master "http://127.0.0.1:$port" unit > /dev/null; done
"$venv/bin/st" run "http://127.0.0.1:$port/api/v1/openapi.json" \
    --url "http://127.0.0.1:$port" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance \
    --max-examples "$examples" \
    --workers 2 \
    --no-color
