#!/usr/bin/env bash
# Multi-region acceptance tests of Pangolin (see docs/testing.md, "Multi-region tests"):
#   1. starts `pangolin dev` on a fresh temporary data dir (ports 8181/8281, 9000/9100,
#      8190/8290/8390 must be free) and waits until both catalogs are ready;
#   2. runs tests/python/test_multi_region.py against it (PANGOLIN_DEV_DATA_DIR set);
#   3. "the primary survives a restart of the whole deployment": switches the primary to
#      eu-west-1, stops dev with SIGTERM (all four processes must exit within 20 s), starts it
#      again on the same data dir, checks that `admin control status` still says eu-west-1 at
#      the same epoch and that writes commit in eu-west-1, then switches back to us-east-1.
# Exits non-zero when anything fails; always stops what it started.
# Environment:
#   PANGOLIN          the pangolin binary (default $CARGO_TARGET_DIR/debug/pangolin)
#   CARGO_TARGET_DIR  (default $HOME/.cache/pangolin/target)
#   PANGOLIN_VENV     Python venv with tests/python/requirements.txt (default $HOME/.cache/pangolin/venv)
#   PYTEST_ARGS       extra pytest arguments (e.g. "-k switchover")
#   KEEP_WORK=1       keep the temporary data dir and logs
# To run it beside another `pangolin dev` on the same machine, use a private network namespace:
#   unshare -n bash -c 'ip link set lo up; tests/multi_region.sh'
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pangolin/target}"
PANGOLIN="${PANGOLIN:-$CARGO_TARGET_DIR/debug/pangolin}"
VENV="${PANGOLIN_VENV:-$HOME/.cache/pangolin/venv}"
PY="$VENV/bin/python"
WORK="$(mktemp -d /tmp/pangolin-multi-region.XXXXXX)"
DATA="$WORK/data"
LOG="$WORK/dev.log"
DEV_PID=""
FAILED=()
US=http://127.0.0.1:8181
EU=http://127.0.0.1:8281

log() { printf '\n== %s\n' "$*"; }
fail() { FAILED+=("$1"); printf '!! FAILED: %s\n' "$1" >&2; }

# Pids of dev's children (from their pid files), for the stop check.
child_pids() {
  local f
  for f in "$DATA"/dev/*.pid; do [ -f "$f" ] && printf '%s ' "$(cat "$f")"; done
}

# Every pangolin process we started: the dev supervisor and whatever children it has now.
our_pids() {
  local pids="$DEV_PID"
  if [ -n "$DEV_PID" ]; then pids="$pids $(pgrep -P "$DEV_PID" 2>/dev/null | tr '\n' ' ')"; fi
  printf '%s\n' $pids $(child_pids) | sort -un | tr '\n' ' '
}

any_alive() {
  local p
  for p in "$@"; do
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ]; then return 0; fi
  done
  return 1
}

# SIGTERM to the supervisor, then waits up to $1 s for it and every child to exit.
stop_dev() {
  local limit="${1:-20}" pids
  [ -n "$DEV_PID" ] || return 0
  pids="$(our_pids)"
  kill -TERM "$DEV_PID" 2>/dev/null
  local deadline=$((SECONDS + limit))
  while any_alive $pids; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "still running ${limit} s after SIGTERM:" >&2
      for p in $pids; do any_alive "$p" && ps -o pid=,args= -p "$p" >&2; done
      for p in $pids; do kill -KILL "$p" 2>/dev/null; done
      wait "$DEV_PID" 2>/dev/null
      DEV_PID=""
      return 1
    fi
    sleep 0.2
  done
  wait "$DEV_PID" 2>/dev/null
  DEV_PID=""
  return 0
}

cleanup() {
  local rc=$?
  if [ -n "$DEV_PID" ]; then stop_dev 20 || true; fi
  if [ "${KEEP_WORK:-0}" = 1 ] || [ "$rc" != 0 ]; then
    echo "data dir and logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ready() { curl -fsS -o /dev/null --max-time 2 "$1/health/ready" 2>/dev/null; }

start_dev() {
  "$PANGOLIN" dev --data-dir "$DATA" "$@" >>"$LOG" 2>&1 &
  DEV_PID=$!
  local deadline=$((SECONDS + 60))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if ready "$US" && ready "$EU"; then return 0; fi
    if ! kill -0 "$DEV_PID" 2>/dev/null; then break; fi
    sleep 0.25
  done
  echo "pangolin dev did not become ready on $US and $EU; last lines of its log:" >&2
  tail -n 40 "$LOG" >&2
  return 1
}

admin() { "$PANGOLIN" admin --json "$@"; }

# `admin control status` at $1 → "primary epoch" (or nothing).
primary_and_epoch() {
  admin --endpoint "$1" control status 2>>"$LOG" |
    "$PY" -c 'import json,sys; c=json.load(sys.stdin)["control"]; print(c["primary"], c["epoch"])' 2>/dev/null
}

# Waits until writes through $1 commit in region $2: POST a namespace, retrying 503s (30 s).
write_commits_in() {
  local uri="$1" want="$2" ns headers code region deadline=$((SECONDS + 30))
  ns="mr_sh_$(date +%s%N)"
  while [ "$SECONDS" -lt "$deadline" ]; do
    headers="$(curl -sS -o /dev/null -D - --max-time 5 -H 'content-type: application/json' \
      -d "{\"namespace\":[\"$ns\"]}" "$uri/v1/demo/namespaces" 2>/dev/null)"
    code="$(printf '%s' "$headers" | awk 'NR==1{print $2}')"
    region="$(printf '%s' "$headers" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-pangolin-region"{print $2}')"
    if [ "$code" = 200 ]; then
      if [ "$region" = "$want" ]; then echo "write through $uri committed in $region"; return 0; fi
      echo "write through $uri committed in '$region', expected $want" >&2
      return 1
    fi
    sleep 0.25
  done
  echo "no write through $uri succeeded within 30 s (last status: ${code:-none})" >&2
  return 1
}

# ---- run -------------------------------------------------------------------------------------
if [ ! -x "$PANGOLIN" ]; then
  log "building pangolin"
  cargo build --bin pangolin || { fail "cargo build"; exit 1; }
fi
if [ ! -x "$PY" ]; then
  echo "no Python venv at $VENV (see tests/run, or: python3 -m venv $VENV && $VENV/bin/pip install -r tests/python/requirements.txt)" >&2
  exit 1
fi
for port in 8181 8281 9000 9100 8190 8290 8390; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already serving: stop the other pangolin dev first (or run in a private network namespace)" >&2
    exit 1
  fi
done

log "starting pangolin dev on a fresh data dir ($DATA)"
if ! start_dev --fresh; then
  fail "pangolin dev start"
  exit 1
fi

log "multi-region tests (tests/python/test_multi_region.py)"
PANGOLIN_DEV_DATA_DIR="$DATA" PANGOLIN="$PANGOLIN" PANGOLIN_MR_TIMINGS="$WORK/leader-kill.json" \
  "$PY" -m pytest -s -v tests/python/test_multi_region.py ${PYTEST_ARGS:-} || fail "tests/python/test_multi_region.py"

log "hardening regression tests in both regions (locations, replication reports, HTTP limits)"
for suite in tests/python/test_locations.py tests/python/test_replication_reports.py tests/python/test_http_limits.py; do
  PANGOLIN_DEV_DATA_DIR="$DATA" "$PY" -m pytest -v "$suite" ${PYTEST_ARGS:-} || fail "$suite"
done

log "the primary survives a restart of the whole deployment"
before=""
if ! admin control switchover --to eu-west-1 >"$WORK/switchover.json" 2>>"$LOG"; then
  fail "switchover to eu-west-1 before the restart"
  cat "$WORK/switchover.json" >&2
else
  before="$(primary_and_epoch "$US")"
  echo "before the stop: primary/epoch = $before"
  [ "${before%% *}" = eu-west-1 ] || fail "after the switchover the status says '$before', expected eu-west-1"
  write_commits_in "$EU" eu-west-1 || fail "a write before the restart did not commit in eu-west-1"
fi

log "stopping pangolin dev (SIGTERM; all four processes must exit within 20 s)"
stopped_pids="$(our_pids)"
if stop_dev 20; then
  echo "stopped: $stopped_pids"
else
  fail "pangolin dev did not stop within 20 s of SIGTERM"
fi

if [ -n "$before" ]; then
  log "restarting pangolin dev on the same data dir"
  if ! start_dev; then
    fail "pangolin dev restart"
  else
    for endpoint in "$US" "$EU"; do
      after="$(primary_and_epoch "$endpoint")"
      echo "after the restart, $endpoint: primary/epoch = $after"
      [ "$after" = "$before" ] || fail "after the restart $endpoint says '$after', expected '$before'"
    done
    for endpoint in "$EU" "$US"; do
      write_commits_in "$endpoint" eu-west-1 || fail "after the restart a write through $endpoint did not commit in eu-west-1"
    done
    if admin control switchover --to us-east-1 >"$WORK/switchback.json" 2>>"$LOG"; then
      back="$(primary_and_epoch "$US")"
      echo "switched back: primary/epoch = $back"
      [ "$back" = "us-east-1 $((${before##* } + 1))" ] || fail "after the switch back the status says '$back', expected 'us-east-1 $((${before##* } + 1))'"
      write_commits_in "$EU" us-east-1 || fail "after the switch back a write through $EU did not commit in us-east-1"
    else
      fail "switch back to us-east-1 after the restart"
    fi
  fi
  stop_dev 20 || fail "pangolin dev did not stop within 20 s of SIGTERM (second stop)"
fi

if [ -f "$WORK/leader-kill.json" ]; then
  log "leader-kill measurements"
  cat "$WORK/leader-kill.json"
fi
if [ "${#FAILED[@]}" -gt 0 ]; then
  printf '\nFAILED steps:\n' >&2
  printf '  - %s\n' "${FAILED[@]}" >&2
  echo "dev log: $LOG" >&2
  exit 1
fi
printf '\nAll multi-region steps passed.\n'
