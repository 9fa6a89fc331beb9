#!/usr/bin/env bash
# FlowPilot CI fuzz stage: Schemathesis fuzzes the GraphQL API of a real `flowpilot serve`
# on PostgreSQL + Redis, in two passes: anonymous, then as a signed-in user who owns an
# organization with a workflow, an execution, triggers and an API key.
#
#   bash .ci/fuzz.sh [path/to/flowpilot]      # default: target/debug/flowpilot (never built here)
#
# It fails (non-zero exit) on any 5xx, any GraphQL error whose extensions.code is INTERNAL
# (or missing, or not one the README documents), and any response that is not GraphQL (not
# JSON, or without `data`/`errors`): the built-in checks not_a_server_error and
# response_schema_conformance plus the custom check `flowpilot_graphql_contract` in
# .ci/fuzz_hooks.py. Each failure is printed with a curl command that reproduces it; the
# server log, JUnit reports and request counts stay in target/fuzz/.
#
# Budget: the whole stage within 5 minutes on 2 cores.
#   install Schemathesis into target/fuzz-venv   ~30 s the first time, ~1 s when cached
#   database, server start, seeding             ~10 s
#   pass 1, anonymous                           FUZZ_ANON_SECS (default 75 s) of fuzzing
#   pass 2, authenticated                       FUZZ_AUTH_SECS (default 125 s) of fuzzing
# Measured: 3m50s with a fresh install, ~3m30s with the venv cached. Each pass is also
# killed FUZZ_GRACE_SECS (default 20 s) after its budget, so even a hanging server ends
# the stage within about 4m40s.
#
# Why Schemathesis 4.x (4.32.5, the newest on PyPI when this was written): both 3.39 and 4.x
# load a GraphQL schema by introspecting the URL (`schemathesis run http://host/graphql`),
# but only 4.x has a time budget for the whole run (`--max-time`; 3.x only caps examples per
# operation), dictionaries binding known values to GraphQL arguments (how the seeded ids
# reach `organization(id:)`, `input.workflowId`, ...), a GraphQL stateful phase reusing ids
# from earlier answers, and the `filter_failure` hook .ci/fuzz_hooks.py needs. Hooks and the
# custom check are loaded from the file named by SCHEMATHESIS_HOOKS; the dictionaries come
# from a schemathesis.toml written by the seeding step (--config-file).
#
# Needs: python3 (with venv), PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres),
# Redis at 127.0.0.1:6379, createdb/dropdb and redis-cli. Outgoing traffic: none besides
# pip; the fuzzed server runs no engine (FLOWPILOT_RUN_ENGINE=false), so no HTTP step a
# fuzzed workflow holds is ever run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

SCHEMATHESIS_VERSION=4.32.5
BIN="${1:-target/debug/flowpilot}"
VENV="${FUZZ_VENV:-$ROOT/target/fuzz-venv}"
OUT="${FUZZ_OUT:-$ROOT/target/fuzz}"
PG_HOST="${FUZZ_PG_HOST:-127.0.0.1}"
PG_PORT="${FUZZ_PG_PORT:-5432}"
PG_USER="${FUZZ_PG_USER:-postgres}"
REDIS_URL_FUZZ="${FUZZ_REDIS_URL:-redis://127.0.0.1:6379}"
ANON_SECS="${FUZZ_ANON_SECS:-75}"
AUTH_SECS="${FUZZ_AUTH_SECS:-125}"
GRACE_SECS="${FUZZ_GRACE_SECS:-20}"
WORKERS="${FUZZ_WORKERS:-2}"
VENV="$(realpath -m "$VENV")"
OUT="$(realpath -m "$OUT")"

step() { printf '\n==> %s (at %ss)\n' "$*" "$SECONDS"; }
now() { date +%s; }
SECONDS=0

if [[ ! -x "$BIN" ]]; then
  echo "fuzz: no server binary at $BIN (build it first, e.g. cargo build)" >&2
  exit 1
fi
BIN="$(realpath "$BIN")"

# --- Schemathesis, cached in a venv ------------------------------------------------------
step "Schemathesis $SCHEMATHESIS_VERSION in $VENV"
if [[ "$("$VENV/bin/schemathesis" --version 2>/dev/null || true)" != *"version $SCHEMATHESIS_VERSION" ]]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$VENV/bin/schemathesis" --version

# --- A fresh database, a Redis prefix of its own, and the server ---------------------------
rm -rf "$OUT"
mkdir -p "$OUT"
DB="fp_fuzz_$$"
REDIS_PREFIX="flowpilot-fuzz-$$:"
SERVER_PID=""
WORKER_PID=""

# shellcheck source=.ci/lib.sh
source "$ROOT/.ci/lib.sh"

cleanup() {
  local status=$?
  stop "$WORKER_PID"
  stop "$SERVER_PID"
  dropdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" --if-exists --force "$DB" 2>/dev/null \
    || dropdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" --if-exists "$DB" || true
  redis-cli -u "$REDIS_URL_FUZZ" --scan --pattern "${REDIS_PREFIX}*" 2>/dev/null \
    | xargs -r redis-cli -u "$REDIS_URL_FUZZ" del >/dev/null 2>&1 || true
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "database $DB, Redis prefix $REDIS_PREFIX"
createdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$DB"

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE_URL="http://127.0.0.1:$PORT"

# Settings shared by the server and the seeding worker.
export DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB"
export REDIS_URL="$REDIS_URL_FUZZ"
export FLOWPILOT_REDIS_PREFIX="$REDIS_PREFIX"
FLOWPILOT_JWT_SECRET="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
FLOWPILOT_ENCRYPTION_KEY="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
export FLOWPILOT_JWT_SECRET FLOWPILOT_ENCRYPTION_KEY
export FLOWPILOT_LOG_FORMAT=json FLOWPILOT_LOG=info
# Fuzzing is many sign-ins and registrations from one address: no rate limits, no lockout.
export FLOWPILOT_RATE_LIMIT_PER_IP=0 FLOWPILOT_RATE_LIMIT_PER_EMAIL=0
export FLOWPILOT_LOCKOUT_THRESHOLD=1000000
# Account mail goes to the log, where the seeding reads the verification link.
unset FLOWPILOT_SMTP_URL FLOWPILOT_INTROSPECTION FLOWPILOT_HOST FLOWPILOT_PORT

step "flowpilot serve on $BASE_URL (log: $OUT/server.log)"
FLOWPILOT_RUN_ENGINE=false "$BIN" serve --host 127.0.0.1 --port "$PORT" >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 600); do
  if curl -fsS "$BASE_URL/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "fuzz: the server exited during start-up:" >&2
    tail -n 30 "$OUT/server.log" >&2
    exit 1
  fi
  sleep 0.1
done
curl -fsS "$BASE_URL/health" >/dev/null

# --- Seed the authenticated user's data ---------------------------------------------------
# The serving process runs no engine; a short-lived `flowpilot worker` runs the seeded
# execution to the end so that its steps, events and output exist for the fuzzer to read.
step "seeding users, organizations, a workflow, an execution, triggers, an API key, invitations"
"$BIN" worker >"$OUT/worker.log" 2>&1 &
WORKER_PID=$!
python3 .ci/fuzz_auth.py seed --url "$BASE_URL" --log "$OUT/server.log" --out "$OUT/state.json" \
  --schemathesis-config "$OUT/schemathesis.toml" --wait-execution
stop "$WORKER_PID"
WORKER_PID=""

# --- The two passes -----------------------------------------------------------------------
FAILED=0
run_pass() { # name seconds [extra env assignments...]
  local name="$1" secs="$2"
  shift 2
  step "pass: $name (${secs}s budget)"
  local start end status=0
  start=$(now)
  (
    cd "$OUT"
    env -u FLOWPILOT_FUZZ_STATE "$@" \
      PYTHONDONTWRITEBYTECODE=1 SCHEMATHESIS_HOOKS="$ROOT/.ci/fuzz_hooks.py" \
      FLOWPILOT_FUZZ_STATS="$OUT/$name.stats.json" \
      timeout --signal=INT --kill-after=10 "$((secs + GRACE_SECS))" \
      "$VENV/bin/schemathesis" --config-file "$OUT/schemathesis.toml" run "$BASE_URL/graphql" \
      --checks not_a_server_error,response_schema_conformance,flowpilot_graphql_contract \
      --max-time "$secs" \
      --workers "$WORKERS" \
      --request-timeout 30 \
      --generation-database none \
      --report junit --report-dir "$OUT/$name" \
      --no-color
  ) || status=$?
  end=$(now)
  python3 - "$name" "$((end - start))" "$status" "$OUT/$name.stats.json" <<'EOF'
import json, sys
name, secs, status, path = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
try:
    stats = json.load(open(path))
except (OSError, ValueError):
    stats = {}
print(f"fuzz pass {name}: exit {status}, {secs}s, {stats.get('requests', '?')} requests, "
      f"statuses {stats.get('statuses', {})}, error codes {stats.get('error_codes', {})}, "
      f"{stats.get('operations_with_a_clean_answer', '?')}/{stats.get('operations_tested', '?')} "
      f"operations answered without errors at least once, re-logins {stats.get('relogins', 0)}")
EOF
  [[ "$status" -eq 0 ]] || FAILED=1
}

run_pass anonymous "$ANON_SECS"
run_pass authenticated "$AUTH_SECS" FLOWPILOT_FUZZ_STATE="$OUT/state.json"

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "fuzz: the server died during fuzzing; see $OUT/server.log" >&2
  FAILED=1
fi
if grep -q '"level":"ERROR"' "$OUT/server.log"; then
  echo "fuzz: the server logged errors (not failing the stage on them):" >&2
  grep '"level":"ERROR"' "$OUT/server.log" | head -n 20 >&2
fi

if [[ "$FAILED" -ne 0 ]]; then
  step "fuzz FAILED in ${SECONDS}s (server log, reports and counts in $OUT)"
  exit 1
fi
step "fuzz passed in ${SECONDS}s"
