#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client (all 517 cases) against a freshly built release
# `examples/echo` on a free loopback port, and fails unless every case passes (OK, NON-STRICT,
# INFORMATIONAL or UNIMPLEMENTED; the compression cases are UNIMPLEMENTED because
# permessage-deflate is not negotiated).
#
#   scripts/autobahn.sh            # report in target/autobahn/reports/index.html
#
# wstest is Python 2 only: the script builds a virtualenv with it from pyenv's CPython 2.7
# (`pyenv install 2.7.18`) into a cache directory (NUCLEUS_CACHE, default ~/.cache/nucleus-stream),
# once; the pip packages come from the Python registry. Without Python 2.7 it FAILS.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${NUCLEUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nucleus-stream}
VENV="$CACHE/autobahn-venv"
OUT=target/autobahn
AGENT=NucleusStream
CASES=517

if [ ! -x "$VENV/bin/wstest" ]; then
  PY2=${PY2:-}
  if [ -z "$PY2" ]; then
    root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
    PY2=$(ls -d "$root"/versions/2.7*/bin/python2.7 2>/dev/null | tail -n 1 || true)
  fi
  if [ -z "$PY2" ] || [ ! -x "$PY2" ]; then
    echo "autobahn: FAILED: no Python 2.7 found (wstest is Python 2 only)." >&2
    echo "  install one with pyenv (pyenv install 2.7.18) or point PY2 at a python2.7 binary" >&2
    exit 1
  fi
  echo "autobahn: building the wstest virtualenv in $VENV from $PY2 (once, ~1 min)"
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  "$PY2" -m pip install -q 'virtualenv<20.16'
  "$PY2" -m virtualenv -q "$VENV"
  P="$VENV/bin/pip"
  $P install -q 'setuptools==44.0.0' 'wheel==0.36.2' 'incremental==16.10.1'
  $P install -q 'pyOpenSSL==19.1.0' 'cryptography==3.3.2'
  $P install -q --no-build-isolation 'Twisted==19.10.0'
  $P install -q --no-build-isolation 'txaio==2.1.0' 'zope.interface==4.6.0' 'jinja2==2.11.3' \
    'markupsafe==1.1.1' 'Werkzeug==1.0.1' 'klein==17.10.0' 'service_identity==18.1.0' \
    'unittest2==1.1.0' 'six==1.16.0' 'autobahn[twisted,accelerate]==0.10.9'
  $P install -q --no-build-isolation --no-deps 'autobahntestsuite==25.10.1'
  "$VENV/bin/wstest" -a >/dev/null
fi

echo "autobahn: building examples/echo (release)"
cargo build --release --example echo
mkdir -p "$OUT"
rm -rf "$OUT/reports"

# Port 0: the echo server picks a free port and prints it.
RUST_LOG=warn target/release/examples/echo 127.0.0.1:0 >"$OUT/echo.out" 2>"$OUT/echo.err" &
ECHO_PID=$!
trap 'kill "$ECHO_PID" 2>/dev/null || true' EXIT
URL=
for _ in $(seq 1 100); do
  URL=$(sed -n 's/^echo listening on \(ws:\/\/127\.0\.0\.1:[0-9]*\).*/\1/p' "$OUT/echo.out")
  [ -n "$URL" ] && break
  kill -0 "$ECHO_PID" 2>/dev/null || { cat "$OUT/echo.err" >&2; echo "autobahn: FAILED: echo exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$URL" ] || { echo "autobahn: FAILED: echo did not start" >&2; exit 1; }
echo "autobahn: echo at $URL (pid $ECHO_PID)"

cat >"$OUT/spec.json" <<SPEC
{"options": {"failByDrop": false}, "outdir": "reports",
 "servers": [{"agent": "$AGENT", "url": "$URL"}],
 "cases": ["*"], "exclude-cases": [], "exclude-agent-cases": {}}
SPEC
(cd "$OUT" && "$VENV/bin/wstest" -m fuzzingclient -s spec.json >wstest.log 2>&1) || {
  tail -n 20 "$OUT/wstest.log" >&2
  echo "autobahn: FAILED: wstest exited with an error" >&2
  exit 1
}
kill "$ECHO_PID" 2>/dev/null || true
wait "$ECHO_PID" 2>/dev/null || true
trap - EXIT

python3 - "$OUT/reports/index.json" "$AGENT" "$CASES" <<'CHECK'
import json, sys
index, agent, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
cases = json.load(open(index)).get(agent, {})
passing = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}
passing_close = {"OK", "INFORMATIONAL", "UNIMPLEMENTED"}
failed = sorted(k for k, v in cases.items()
                if v["behavior"] not in passing or v["behaviorClose"] not in passing_close)
counts = {}
for v in cases.values():
    counts[v["behavior"]] = counts.get(v["behavior"], 0) + 1
print("autobahn: %d cases, %d failed %s" % (len(cases), len(failed), json.dumps(counts, sort_keys=True)))
if failed:
    print("autobahn: failed cases: %s" % ", ".join(failed[:40]))
if len(cases) < want:
    print("autobahn: FAILED: expected %d cases" % want)
sys.exit(0 if len(cases) >= want and not failed else 1)
CHECK
