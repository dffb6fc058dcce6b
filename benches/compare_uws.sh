#!/usr/bin/env bash
# Side by side: the chat example (nucleus-stream) and the same JSON chat protocol on
# uWebSockets.js (npm `uwebsockets` 3.0.6, benches/uws_chat.js), driven by the same load
# generator (examples/loadgen), each server pinned to core $SERVER_CPU and the load generator
# to core $LOADGEN_CPU, in interleaved pairs (nucleus, uWS, nucleus, uWS, ...). Prints one
# table: per scenario the median of each server and the median of the per-pair ratios
# (nucleus / uWS; below 1 means nucleus uses less).
#
#   benches/compare_uws.sh                       # everything, 3 pairs
#   PAIRS=1 SCENARIOS="sat1000 rooms200" benches/compare_uws.sh
#   SCENARIOS=churn CHURN=100000 benches/compare_uws.sh   # nucleus only: RSS after churn
#   AGAINST=/path/to/an/older/chat PAIRS=8 SCENARIOS=sat1000 benches/compare_uws.sh
#                                                # A/B of two builds of the chat example: the
#                                                # "uws" column runs AGAINST (a copy of an older
#                                                # target/release/examples/chat) instead
#
# Scenarios: sat1000 (1 room x 1,000 subscribers, saturating: server CPU per delivery),
# rooms200 (200 rooms x 11, 200 publishers, saturating), idle100 (10,000 idle joined
# connections in rooms of 100: RSS per connection), room10k (10,000 subscribers joined to ONE
# room, every join announced to the room, then 200 msg/s = 2 M deliveries/s offered: RSS after
# the join storm settled, RSS, p99, lost), slow (100 readers, 4 KiB messages at 500 msg/s,
# without and with 100 members that never read: readers' p99, non-readers closed with 1008),
# churn (nucleus only: CHURN connect/join/disconnect cycles; RSS before/after, hub empty).
#
# Needs node + npm (uwebsockets is installed into $NUCLEUS_CACHE/uws, not the repository),
# taskset, and an open-files hard limit of at least 20,500 for the 10,000-connection cases.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${PAIRS:-3}
SCENARIOS=${SCENARIOS:-"sat1000 rooms200 idle100 room10k slow churn"}
DURATION=${DURATION:-5}
BIG=${BIG:-10000}
CHURN=${CHURN:-100000}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
CACHE=${NUCLEUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nucleus-stream}
UWS_DIR="$CACHE/uws"
OUT=target/compare_uws
mkdir -p "$OUT"
RESULTS="$OUT/results.tsv"
: >"$RESULTS"

command -v taskset >/dev/null || { echo "compare_uws: FAILED: taskset missing (util-linux)" >&2; exit 1; }
AGAINST=${AGAINST:-}
if [ -n "$AGAINST" ]; then
  [ -x "$AGAINST" ] || { echo "compare_uws: FAILED: AGAINST=$AGAINST is not an executable" >&2; exit 1; }
  echo "compare_uws: the \"uws\" column below is $AGAINST (a chat example build), not uWebSockets.js"
elif [ "$SCENARIOS" != churn ]; then
  command -v node >/dev/null || { echo "compare_uws: FAILED: node is not installed (apt-get install nodejs npm)" >&2; exit 1; }
  if [ ! -f "$UWS_DIR/node_modules/uwebsockets/package.json" ]; then
    echo "compare_uws: installing uwebsockets@3.0.6 into $UWS_DIR"
    mkdir -p "$UWS_DIR"
    (cd "$UWS_DIR" && npm install --no-audit --no-fund --silent uwebsockets@3.0.6)
  fi
fi
ulimit -n "$(ulimit -Hn)" || true
echo "compare_uws: open-files limit $(ulimit -n); $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; pairs $PAIRS"

cargo build --release --example chat --example loadgen
LOADGEN=target/release/examples/loadgen

# The uWS server keeps no history, so the chat example runs without it too (`--history 0`): the
# same frames and the same work on both sides, and the churn check measures what connections
# leave behind, not a history window filling up (bounded by its size; its cost per stored
# message is measured by tests/history_memory.rs and benches/history.rs). The uWS server has no
# inbound rate limit either, and the load generator's publishers send far above the chat's
# default (50 messages/s per connection), so it is off (`--inbound-rate off`): with it on, the
# saturating scenarios measured refused messages ("lost" 16,016 of sat1000's and 0 of the
# 100 non-readers closed, 2026-12-01 13:43 UTC).
NUCLEUS_CHAT_ARGS=${NUCLEUS_CHAT_ARGS:---history 0 --inbound-rate off}

SERVER_PID=
start_server() { # kind -> sets SERVER_PID, URL
  local kind=$1 log="$OUT/server-$1.log"
  : >"$log"
  if [ "$kind" = nucleus ]; then
    RUST_LOG=error taskset -c "$SERVER_CPU" target/release/examples/chat 127.0.0.1:0 $NUCLEUS_CHAT_ARGS >"$log" 2>&1 &
  elif [ -n "$AGAINST" ]; then
    RUST_LOG=error taskset -c "$SERVER_CPU" "$AGAINST" 127.0.0.1:0 $NUCLEUS_CHAT_ARGS >"$log" 2>&1 &
  else
    NODE_PATH="$UWS_DIR/node_modules" taskset -c "$SERVER_CPU" node benches/uws_chat.js 0 >"$log" 2>&1 &
  fi
  SERVER_PID=$!
  URL=
  for _ in $(seq 1 200); do
    URL=$(sed -n 's/.*listening on \(ws:\/\/127\.0\.0\.1:[0-9]*\).*/\1/p' "$log" | head -n 1)
    [ -n "$URL" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
  done
  cat "$log" >&2
  echo "compare_uws: FAILED: $kind server did not start" >&2
  exit 1
}
stop_server() { # -> the server's last output lines in $OUT/server-*.log
  kill -INT "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}
trap 'stop_server' EXIT

# run SCENARIO SERVER PAIR LABEL loadgen-args...: records every RESULT key of the run.
run() {
  local scenario=$1 kind=$2 pair=$3 label=$4; shift 4
  start_server "$kind"
  local log="$OUT/$scenario-$label-$kind-$pair.log"
  if ! taskset -c "$LOADGEN_CPU" "$LOADGEN" --url "$URL" --server-pid "$SERVER_PID" "$@" >"$log" 2>&1; then
    echo "   ($kind $label pair $pair: loadgen reported a failure: $(tail -n 1 "$log"))"
  fi
  stop_server
  grep '^RESULT' "$log" | tr ' ' '\n' | grep '=' | while IFS='=' read -r k v; do
    printf '%s\t%s\t%s\t%s\t%s\n' "$scenario" "$label" "$kind" "$pair" "$k=$v" >>"$RESULTS"
  done
  if [ "$kind" = nucleus ]; then
    grep -h 'shutting down' "$OUT/server-nucleus.log" | sed "s/^/   nucleus after $label: /" || true
  fi
  echo "   $scenario $label $kind pair $pair: $(grep '^RESULT' "$log" | cut -c8- | head -c 220)"
}

pairs() { # scenario label loadgen-args...
  local scenario=$1 label=$2; shift 2
  for p in $(seq 1 "$PAIRS"); do
    run "$scenario" nucleus "$p" "$label" "$@"
    run "$scenario" uws "$p" "$label" "$@"
  done
}

for s in $SCENARIOS; do
  echo "== $s"
  case $s in
    sat1000) pairs sat1000 sat --subscribers 1000 --duration "$DURATION" ;;
    rooms200) pairs rooms200 sat --subscribers 2000 --publishers 200 --rooms 200 --duration "$DURATION" ;;
    idle100) pairs idle100 idle --idle --subscribers "$BIG" --rooms $((BIG / 100)) ;;
    room10k) pairs room10k rate --subscribers "$BIG" --rooms 1 --rate 200 --duration "$DURATION" --drain-timeout 10 ;;
    slow)
      # 500 msg/s of 4 KiB for 4 s: 8 MiB per member, more than a non-reader's kernel buffers
      # and 1 MiB queue hold, so each is closed part-way; they read once publishing stops
      # (within the 5 s close timeout), to see the close code.
      # Each pair runs alone and with back to back, per server, so that the with/alone ratio
      # compares runs minutes apart at most on this noisy machine.
      SLOW="--subscribers 100 --size 4096 --rate 500 --duration 4"
      for p in $(seq 1 "$PAIRS"); do
        for kind in nucleus uws; do
          run slow "$kind" "$p" alone $SLOW
          run slow "$kind" "$p" with $SLOW --non-readers 100
        done
      done ;;
    churn)
      run churn nucleus 1 churn --churn "$CHURN" --connect-parallel 64
      # The churn must leave the hub empty and the RSS within 5 MiB of where it started.
      delta=$(awk -F'\t' '$1=="churn" && $5 ~ /^rss_delta_kib=/ {sub("rss_delta_kib=","",$5); print $5}' "$RESULTS")
      failed=$(awk -F'\t' '$1=="churn" && $5 ~ /^failed=/ {sub("failed=","",$5); print $5}' "$RESULTS")
      hub=$(grep -h 'shutting down' "$OUT/server-nucleus.log" | tail -n 1)
      if [ -z "$delta" ] || [ "$delta" -gt 5120 ] || [ "$failed" != 0 ] || ! echo "$hub" | grep -q 'hub: 0 sockets, 0 rooms'; then
        echo "compare_uws: FAILED: churn: RSS delta ${delta:-?} KiB (limit 5120), failed cycles ${failed:-?}, ${hub:-no shutdown line}" >&2
        CHURN_FAILED=1
      else
        echo "   churn: RSS delta $delta KiB (limit 5120), 0 failed cycles, $hub"
      fi ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
done

CHURN_FAILED=${CHURN_FAILED:-0}
python3 - "$RESULTS" <<'TABLE'
import statistics, sys, collections
rows = collections.defaultdict(lambda: collections.defaultdict(dict))
for line in open(sys.argv[1]):
    scenario, label, kind, pair, kv = line.rstrip('\n').split('\t')
    k, v = kv.split('=', 1)
    try:
        rows[(scenario, label, k)][kind][int(pair)] = float(v)
    except ValueError:
        pass
show = {
    ('sat1000', 'sat'): ['server_cpu_ns_per_delivery', 'lost', 'p99_ns'],
    ('rooms200', 'sat'): ['server_cpu_ns_per_delivery', 'lost', 'p99_ns'],
    ('idle100', 'idle'): ['server_rss_bytes_per_connection'],
    ('room10k', 'rate'): ['settled_rss_bytes_per_connection', 'server_rss_kib', 'p99_ns', 'lost', 'delivered_per_s'],
    ('slow', 'alone'): ['p99_ns', 'lost'],
    ('slow', 'with'): ['p99_ns', 'lost', 'closed_1008'],
    ('churn', 'churn'): ['churn_cycles', 'failed', 'rss_before_kib', 'rss_after_kib', 'rss_delta_kib'],
}
print()
print('| scenario | metric | nucleus (median) | uWS (median) | ratio nucleus/uWS (median of pairs) | pairs |')
print('|---|---|---:|---:|---:|---:|')
def fmt(x):
    if x is None: return '–'
    return f'{x:,.0f}' if abs(x) >= 10 else f'{x:.2f}'
for (scenario, label), metrics in show.items():
    for m in metrics:
        d = rows.get((scenario, label, m))
        if not d: continue
        n = d.get('nucleus', {}); u = d.get('uws', {})
        nm = statistics.median(n.values()) if n else None
        um = statistics.median(u.values()) if u else None
        ratios = [n[p] / u[p] for p in n if p in u and u[p]]
        r = f'{statistics.median(ratios):.2f}x' if ratios else '–'
        print(f'| {scenario} ({label}) | {m} | {fmt(nm)} | {fmt(um)} | {r} | {max(len(n), len(u))} |')
# The slow-client target: readers' p99 with the non-readers over the same pair's run without.
alone, with_ = rows.get(('slow', 'alone', 'p99_ns')), rows.get(('slow', 'with', 'p99_ns'))
if alone and with_:
    print()
    print('| slow: readers p99 with ÷ alone | nucleus | uWS |')
    print('|---|---:|---:|')
    cells = []
    for kind in ('nucleus', 'uws'):
        a, w = alone.get(kind, {}), with_.get(kind, {})
        per = [w[p] / a[p] for p in sorted(a) if p in w and a[p]]
        cells.append(f"{statistics.median(per):.2f}x ({', '.join(f'{x:.2f}' for x in per)})" if per else '–')
    print(f'| median of pairs (each pair) | {cells[0]} | {cells[1]} |')
TABLE
exit "$CHURN_FAILED"
