#!/usr/bin/env bash
# Fault injection through the `pangolin dev` supervisor endpoint (docs/fault-injection.md):
#   1. starts `pangolin dev --fresh` on a temporary data dir (ports 8181/8281, 9000/9100,
#      8190/8290/8390 and 8099 must be free) and waits until both catalogs are ready;
#   2. the supervisor lists three running nodes; each node's /api/v1/dev/faults is on and
#      refuses an invalid fault set without changing anything;
#   3. isolates us-east-1 (the primary): writes through 8181 stop succeeding within the lease
#      time and never succeed again while isolated, the control plane fails over to eu-west-1
#      on its own, and writes through 8281 commit there;
#   4. heals: writes through 8181 are forwarded to eu-west-1 again; a one-way delay set with
#      POST /dev/v1/links slows them, mode `none` clears it;
#   5. kills the us-east-1 node: it stays down (no auto-restart) until /restart brings it back;
#      stop/cont freeze and thaw the witness.
# Exits non-zero when anything fails; always stops what it started. Takes about a minute.
# Environment: PANGOLIN (binary), CARGO_TARGET_DIR, KEEP_WORK=1 (keep data dir and log).
# Beside another `pangolin dev`: unshare -n bash -c 'ip link set lo up; tests/dev_faults.sh'
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pangolin/target}"
PANGOLIN="${PANGOLIN:-$CARGO_TARGET_DIR/debug/pangolin}"
PY="$(command -v python3)"
WORK="$(mktemp -d /tmp/pangolin-dev-faults.XXXXXX)"
DATA="$WORK/data"
LOG="$WORK/dev.log"
DEV_PID=""
FAILED=()
US=http://127.0.0.1:8181
EU=http://127.0.0.1:8281
SUP=http://127.0.0.1:8099
# Write lease (4 s in the dev files) plus request and polling slack.
LEASE_BOUND_S=7

log() { printf '\n== %s\n' "$*"; }
fail() { FAILED+=("$1"); printf '!! FAILED: %s\n' "$1" >&2; }

cleanup() {
  local rc=$?
  if [ -n "$DEV_PID" ]; then
    kill -TERM "$DEV_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$DEV_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$DEV_PID" 2>/dev/null
    for f in "$DATA"/dev/*.pid; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null; done
  fi
  if [ "${KEEP_WORK:-0}" = 1 ] || [ "$rc" != 0 ]; then
    echo "data dir and log kept in $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ready() { curl -fsS -o /dev/null --max-time 2 "$1/health/ready" 2>/dev/null; }
json() { "$PY" -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
post() { curl -sS --max-time 40 -X POST "$@"; }
# "state pid" of dev node $1.
node_state() {
  curl -fsS --max-time 5 "$SUP/dev/v1/nodes" |
    json "' '.join(str(n['state'])+' '+str(n['pid']) for n in d if n['name']=='$1')"
}
# POSTs a fresh namespace through $1; prints "<status> <x-pangolin-region>".
try_write() {
  local headers code region
  headers="$(curl -sS -o /dev/null -D - --max-time 3 -H 'content-type: application/json' \
    -d "{\"namespace\":[\"df_$(date +%s%N)\"]}" "$1/v1/demo/namespaces" 2>/dev/null)"
  code="$(printf '%s' "$headers" | awk 'NR==1{print $2}')"
  region="$(printf '%s' "$headers" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-pangolin-region"{print $2}')"
  echo "${code:-000} ${region:-none}"
}
# Waits up to $3 s until a write through $1 commits in region $2.
write_commits_in() {
  local deadline=$((SECONDS + $3)) got
  while [ "$SECONDS" -lt "$deadline" ]; do
    got="$(try_write "$1")"
    if [ "${got%% *}" = 200 ]; then
      [ "${got#* }" = "$2" ] && { echo "write through $1 committed in $2"; return 0; }
      echo "write through $1 committed in '${got#* }', expected $2" >&2
      return 1
    fi
    sleep 0.25
  done
  echo "no write through $1 committed within $3 s (last: ${got:-none})" >&2
  return 1
}
primary() {
  "$PANGOLIN" admin --json --endpoint "$1" control status 2>/dev/null | json 'd["control"]["primary"]' 2>/dev/null
}

# ---- run -------------------------------------------------------------------------------------
if [ ! -x "$PANGOLIN" ]; then
  log "building pangolin"
  cargo build --bin pangolin || { fail "cargo build"; exit 1; }
fi
for port in 8181 8281 9000 9100 8190 8290 8390 8099; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already serving: stop the other pangolin dev first (or run in a private network namespace)" >&2
    exit 1
  fi
done

log "starting pangolin dev --fresh ($DATA)"
"$PANGOLIN" dev --data-dir "$DATA" --fresh >>"$LOG" 2>&1 &
DEV_PID=$!
deadline=$((SECONDS + 60))
until ready "$US" && ready "$EU"; do
  if [ "$SECONDS" -ge "$deadline" ] || ! kill -0 "$DEV_PID" 2>/dev/null; then
    echo "pangolin dev did not become ready; last lines of its log:" >&2
    tail -n 40 "$LOG" >&2
    fail "pangolin dev start"
    exit 1
  fi
  sleep 0.25
done
grep -q "supervisor http://127.0.0.1:8099" "$LOG" || fail "dev's banner does not name the supervisor endpoint"

log "the supervisor lists the nodes; the nodes' fault endpoints are on"
nodes="$(curl -fsS --max-time 5 "$SUP/dev/v1/nodes")" || fail "GET /dev/v1/nodes"
echo "$nodes"
running="$(printf '%s' "$nodes" | json "sorted(n['name'] for n in d if n['state']=='running' and n['pid'])")"
[ "$running" = "['eu-west-1', 'us-east-1', 'witness']" ] || fail "expected three running nodes, got $running"
for url in "$US" "$EU" http://127.0.0.1:8390; do
  code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "$url/api/v1/dev/faults")"
  [ "$code" = 200 ] || fail "GET $url/api/v1/dev/faults answered $code"
done
code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -X PUT -H 'content-type: application/json' \
  -d '{"links":[{"peer":"eu-west-1","mode":"delay"}]}' "$US/api/v1/dev/faults")"
[ "$code" = 400 ] || fail "a delay without delay_ms answered $code, expected 400"
links="$(curl -fsS --max-time 5 "$US/api/v1/dev/faults" | json 'len(d["links"])')"
[ "$links" = 0 ] || fail "an invalid fault set changed the node's faults ($links links)"
write_commits_in "$US" us-east-1 30 || fail "a write through 8181 before the fault"
# An unforced (automatic) failover needs the target's replication lag to be known and within
# bound, so eu-west-1 must have pulled the primary's log once before the fault.
deadline=$((SECONDS + 30))
until [ "$(curl -fsS --max-time 5 "$EU/api/v1/replication/status" | json 'd.get("lag_records")')" = 0 ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then fail "eu-west-1 did not catch up with us-east-1 before the fault"; break; fi
  sleep 0.25
done

log "isolate us-east-1: its writes stop within the lease time, eu-west-1 takes over"
post "$SUP/dev/v1/regions/us-east-1/isolate" >"$WORK/isolate.json" || fail "POST isolate"
isolated_at=$SECONDS
last_ok=$SECONDS
while [ $((SECONDS - isolated_at)) -lt $((LEASE_BOUND_S + 3)) ]; do
  got="$(try_write "$US")"
  [ "${got%% *}" = 200 ] && last_ok=$SECONDS
  sleep 0.2
done
echo "last write through 8181 acknowledged $((last_ok - isolated_at)) s after the isolation"
[ $((last_ok - isolated_at)) -le "$LEASE_BOUND_S" ] ||
  fail "writes through the isolated primary kept succeeding $((last_ok - isolated_at)) s after the isolation (bound ${LEASE_BOUND_S} s)"
deadline=$((SECONDS + 40))
until [ "$(primary "$EU")" = eu-west-1 ]; do
  got="$(try_write "$US")"
  [ "${got%% *}" = 200 ] && fail "a write through the isolated us-east-1 was acknowledged ($got)"
  if [ "$SECONDS" -ge "$deadline" ]; then fail "eu-west-1 did not become primary within 40 s"; break; fi
  sleep 0.5
done
echo "eu-west-1 is primary $((SECONDS - isolated_at)) s after the isolation"
write_commits_in "$EU" eu-west-1 20 || fail "a write through 8281 after the failover"
got="$(try_write "$US")"
[ "${got%% *}" = 200 ] && fail "a write through the isolated us-east-1 was acknowledged after the failover ($got)"

log "heal: writes through 8181 reach the new primary again"
post "$SUP/dev/v1/heal" >"$WORK/heal.json" || fail "POST heal"
remaining="$(curl -fsS --max-time 5 "$US/api/v1/dev/faults" | json 'len(d["links"])')"
[ "$remaining" = 0 ] || fail "after heal us-east-1 still has $remaining link faults"
write_commits_in "$US" eu-west-1 30 || fail "a write through 8181 after heal"

log "one-way delay us-east-1 -> eu-west-1 (500 ms) slows writes forwarded through 8181"
post -H 'content-type: application/json' -d '{"from":"us-east-1","to":"eu-west-1","mode":"delay","delay_ms":500}' \
  "$SUP/dev/v1/links" >/dev/null || fail "POST links"
mode="$(curl -fsS --max-time 5 "$US/api/v1/dev/faults" | json '",".join(l["peer"]+":"+l["mode"]+":"+str(l.get("delay_ms")) for l in d["links"])')"
[ "$mode" = "eu-west-1:delay:500" ] || fail "us-east-1's faults after POST links: '$mode'"
took="$(curl -sS -o /dev/null -w '%{http_code} %{time_total}' --max-time 10 -H 'content-type: application/json' \
  -d "{\"namespace\":[\"df_slow_$(date +%s%N)\"]}" "$US/v1/demo/namespaces")"
echo "forwarded write with the delay: $took"
"$PY" -c "import sys; c,t='$took'.split(); sys.exit(0 if c=='200' and float(t)>=0.5 else 1)" ||
  fail "a write through the delayed link answered '$took', expected 200 after at least 0.5 s"
code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H 'content-type: application/json' \
  -d '{"from":"us-east-1","to":"eu-west-1","mode":"delay"}' "$SUP/dev/v1/links")"
[ "$code" = 400 ] || fail "a delay without delay_ms answered $code at the supervisor, expected 400"
post -H 'content-type: application/json' -d '{"from":"us-east-1","to":"eu-west-1","mode":"none"}' \
  "$SUP/dev/v1/links" >/dev/null || fail "POST links (none)"
remaining="$(curl -fsS --max-time 5 "$US/api/v1/dev/faults" | json 'len(d["links"])')"
[ "$remaining" = 0 ] || fail "mode none left $remaining link faults on us-east-1"

log "kill us-east-1: it stays down until restarted"
old="$(node_state us-east-1)"
post "$SUP/dev/v1/nodes/us-east-1/kill" >/dev/null || fail "POST kill"
old_pid="${old#* }"
if kill -0 "$old_pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$old_pid/stat" 2>/dev/null)" != Z ]; then
  fail "pid $old_pid still alive after kill"
fi
sleep 7 # longer than the 5 s auto-restart of a crashed node
[ "$(node_state us-east-1)" = "killed None" ] || fail "after kill + 7 s us-east-1 is '$(node_state us-east-1)', expected 'killed None'"
ready "$US" && fail "8181 answers while us-east-1 is killed"
post "$SUP/dev/v1/nodes/us-east-1/restart" >/dev/null || fail "POST restart"
state="$(node_state us-east-1)"
[ "${state%% *}" = running ] && [ "${state#* }" != "$old_pid" ] || fail "after restart us-east-1 is '$state'"
deadline=$((SECONDS + 30))
until ready "$US"; do
  if [ "$SECONDS" -ge "$deadline" ]; then fail "us-east-1 not ready within 30 s of its restart"; break; fi
  sleep 0.25
done
write_commits_in "$US" eu-west-1 30 || fail "a write through 8181 after the restart"

log "stop/cont the witness"
post "$SUP/dev/v1/nodes/witness/stop" >/dev/null || fail "POST stop"
[ "$(node_state witness | cut -d' ' -f1)" = stopped ] || fail "witness not reported stopped"
wpid="$(node_state witness | cut -d' ' -f2)"
[ "$(awk '{print $3}' "/proc/$wpid/stat" 2>/dev/null)" = T ] || fail "witness process $wpid is not stopped"
post "$SUP/dev/v1/nodes/witness/cont" >/dev/null || fail "POST cont"
[ "$(node_state witness | cut -d' ' -f1)" = running ] || fail "witness not reported running after cont"
code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -X POST "$SUP/dev/v1/nodes/nowhere/kill")"
[ "$code" = 404 ] || fail "an unknown node answered $code, expected 404"

if [ "${#FAILED[@]}" -gt 0 ]; then
  printf '\nFAILED:\n'; printf '  - %s\n' "${FAILED[@]}"
  echo "last lines of the dev log:"; tail -n 30 "$LOG"
  exit 1
fi
printf '\nAll dev fault-injection checks passed.\n'
