#!/usr/bin/env bash
# Failover drills against `pangolin dev` (see docs/drills.md):
#   1. a fresh `pangolin dev` (async replication): every scenario of `pangolin drill list` must
#      pass its invariants (exit 0); the JSON report is checked (primary-partition: zero
#      split-brain writes; failover scenarios: a new epoch);
#   2. a fresh `pangolin dev` with PANGOLIN_REPLICATION__MODE=sync: primary-crash loses no
#      acknowledged commit (RPO 0);
#   3. a fresh `pangolin dev` with the fencing check disabled (PANGOLIN_FAULTS__DISABLE_FENCING,
#      the deliberately broken build): primary-partition must FAIL (non-zero exit) and report
#      split-brain writes — the drill catches what it exists to catch;
#   4. the drill history (`GET /api/v1/drills`) lists the drills run.
# voter-loss runs through --fault-cmd/--heal-cmd hooks (curl to the same dev endpoint), the way
# a drill against a real deployment injects its faults.
# Exits non-zero when anything fails; always stops what it started.
# Environment:
#   PANGOLIN          the pangolin binary (default $CARGO_TARGET_DIR/debug/pangolin)
#   CARGO_TARGET_DIR  (default $HOME/.cache/pangolin/target)
#   DRILL_DURATION    least workload time per drill (default 16s)
#   DRILLS            scenarios of step 1 (default: all)
#   KEEP_WORK=1       keep the reports, data dirs and logs
# The fixed dev ports must be free; beside another `pangolin dev`, use a private network
# namespace: unshare -n bash -c 'ip link set lo up; tests/drills.sh'
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pangolin/target}"
PANGOLIN="${PANGOLIN:-$CARGO_TARGET_DIR/debug/pangolin}"
DURATION="${DRILL_DURATION:-16s}"
WORK="$(mktemp -d /tmp/pangolin-drills.XXXXXX)"
LOG="$WORK/dev.log"
DEV_PID=""
FAILED=()
US=http://127.0.0.1:8181
EU=http://127.0.0.1:8281

log() { printf '\n== %s\n' "$*"; }
fail() { FAILED+=("$1"); printf '!! FAILED: %s\n' "$1" >&2; }

stop_dev() {
  [ -n "$DEV_PID" ] || return 0
  local kids
  kids="$(pgrep -P "$DEV_PID" 2>/dev/null | tr '\n' ' ')"
  kill -TERM "$DEV_PID" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$DEV_PID" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$DEV_PID" $kids 2>/dev/null
  wait "$DEV_PID" 2>/dev/null
  DEV_PID=""
}

cleanup() {
  local rc=$?
  stop_dev
  if [ "${KEEP_WORK:-0}" = 1 ] || [ "$rc" != 0 ]; then
    echo "reports, data dirs and logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ready() { curl -fsS -o /dev/null --max-time 2 "$1/health/ready" 2>/dev/null; }

# start_dev <name> [ENV=value ...]: a fresh `pangolin dev` with extra environment.
start_dev() {
  local name="$1"; shift
  echo "---- pangolin dev ($name) ----" >>"$LOG"
  env "$@" "$PANGOLIN" dev --data-dir "$WORK/data-$name" --fresh >>"$LOG" 2>&1 &
  DEV_PID=$!
  local deadline=$((SECONDS + 90))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if ready "$US" && ready "$EU" && curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:8099/dev/v1/nodes; then
      return 0
    fi
    if ! kill -0 "$DEV_PID" 2>/dev/null; then break; fi
    sleep 0.25
  done
  echo "pangolin dev ($name) did not become ready; last lines of its log:" >&2
  tail -n 40 "$LOG" >&2
  return 1
}

# drill <scenario> [args]: runs one drill, JSON report in $WORK/<label>/report.json; answers
# the drill's exit status.
drill() {
  local scenario="$1"; shift
  local out="$WORK/${LABEL:-$scenario}"
  "$PANGOLIN" drill run --scenario "$scenario" --duration "$DURATION" --writers 4 --json \
    --out "$out" "$@" >"$out.json" 2>"$out.log"
  local rc=$?
  # the table, for the CI log
  "$PANGOLIN" drill report "$out/events.jsonl" 2>/dev/null | sed 's/^/    /'
  return $rc
}

# field <label> <jq expression>
field() { jq -r "$2" "$WORK/$1/report.json" 2>/dev/null; }

# ---- run -------------------------------------------------------------------------------------
if [ ! -x "$PANGOLIN" ]; then
  log "building pangolin"
  cargo build --bin pangolin || { fail "cargo build"; exit 1; }
fi
command -v jq >/dev/null || { echo "tests/drills.sh needs jq" >&2; exit 1; }
for port in 8181 8281 9000 9100 8190 8290 8390 8099; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already serving: stop the other pangolin dev first (or run in a private network namespace)" >&2
    exit 1
  fi
done

"$PANGOLIN" drill list

log "1. every scenario against pangolin dev (async replication)"
if start_dev async; then
  for scenario in ${DRILLS:-planned-switchover primary-crash primary-partition replication-outage voter-loss failback}; do
    log "drill $scenario"
    hooks=()
    if [ "$scenario" = voter-loss ]; then
      # through operator hook commands, as against a real deployment (here: the same endpoint)
      hooks=(--fault-cmd 'curl -fsS -X POST "http://127.0.0.1:8099/dev/v1/nodes/$PANGOLIN_DRILL_TARGET/kill"'
             --heal-cmd 'curl -fsS -X POST "http://127.0.0.1:8099/dev/v1/nodes/$PANGOLIN_DRILL_TARGET/restart"')
    fi
    if drill "$scenario" "${hooks[@]}"; then
      echo "$scenario passed"
    else
      fail "drill $scenario (see $WORK/$scenario.log and $WORK/$scenario/report.md)"
    fi
    case "$scenario" in
      primary-partition)
        [ "$(field "$scenario" .split_brain_accepted)" = 0 ] || fail "$scenario: split-brain writes accepted"
        [ "$(field "$scenario" '.primary_before != .primary_after')" = true ] || fail "$scenario: the primary did not change"
        ;;
      primary-crash|planned-switchover|failback)
        [ "$(field "$scenario" '.epoch_after > .epoch_before')" = true ] || fail "$scenario: no new epoch"
        ;;
      voter-loss)
        [ "$(field "$scenario" '.epoch_after == .epoch_before')" = true ] || fail "$scenario: the primary changed"
        grep -q '"detail":"hook' "$WORK/$scenario/events.jsonl" || fail "$scenario: the hook commands did not run"
        ;;
      replication-outage)
        [ "$(field "$scenario" '.epoch_after == .epoch_before')" = true ] || fail "$scenario: the primary changed"
        ;;
    esac
  done
  log "4. the drill history"
  history="$(curl -fsS "$US/api/v1/drills")"
  count="$(printf '%s' "$history" | jq '.drills | length')"
  echo "drill history at us-east-1: $count drills"
  [ "${count:-0}" -ge 1 ] || fail "the drill history is empty"
  first="$(printf '%s' "$history" | jq -r '.drills[0].id')"
  curl -fsS "$US/api/v1/drills/$first" | jq -e '.invariants | length >= 4' >/dev/null ||
    fail "GET /api/v1/drills/$first does not answer the report"
  stop_dev
else
  fail "pangolin dev (async) start"
fi

log "2. primary-crash with synchronous replication: RPO 0"
if start_dev sync PANGOLIN_REPLICATION__MODE=sync; then
  if LABEL=sync-primary-crash drill primary-crash --expect-sync; then
    echo "sync primary-crash passed"
  else
    fail "drill primary-crash in sync mode (see $WORK/sync-primary-crash.log)"
  fi
  [ "$(field sync-primary-crash .rpo_lost)" = 0 ] || fail "sync primary-crash lost acknowledged commits"
  [ "$(field sync-primary-crash .sync_mode)" = true ] || fail "sync primary-crash did not run in sync mode"
  stop_dev
else
  fail "pangolin dev (sync) start"
fi

log "3. the broken build (fencing disabled) must fail primary-partition"
if start_dev broken PANGOLIN_FAULTS__DISABLE_FENCING=true; then
  if LABEL=broken-primary-partition drill primary-partition; then
    fail "primary-partition PASSED with fencing disabled: the drill did not catch the split brain"
  else
    echo "primary-partition failed as it must with fencing disabled"
  fi
  sb="$(field broken-primary-partition .split_brain_accepted)"
  echo "split-brain writes accepted by the broken build: ${sb:-none}"
  [ "${sb:-0}" -gt 0 ] 2>/dev/null || fail "the broken build's report shows no split-brain writes"
  stop_dev
else
  fail "pangolin dev (broken) start"
fi

if [ "${#FAILED[@]}" -gt 0 ]; then
  printf '\nFAILED steps:\n'; printf '  - %s\n' "${FAILED[@]}"
  exit 1
fi
printf '\nAll drills behaved as expected.\n'
