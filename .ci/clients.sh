#!/usr/bin/env bash
# FlowPilot CI clients stage: real outside GraphQL clients against FlowPilot's schema, its
# README and a real `flowpilot serve` on PostgreSQL + Redis.
#
#   bash .ci/clients.sh [path/to/flowpilot]    # default: target/debug/flowpilot (never built here)
#
# Sub-stages, each timed (seconds per sub-stage and a total are printed at the end):
#   a. npm ci in clients/ and web/graphiql/  (skipped for a folder whose node_modules was
#      installed from the same package-lock.json with the same Node: a stored SHA-256)
#   b. web/graphiql/build.mjs --check        (the checked-in GraphiQL assets match the pins)
#   c. schema diff                           (clients/schema-diff.mjs: HEAD~1 -> working tree;
#                                             a BREAKING change needs `schema-break: <reason>`
#                                             in the HEAD commit message)
#   d. README operations, codegen, tsc       (every ```graphql block of README.md is one named
#                                             operation valid against schema.graphql, typed
#                                             with strict scalars, and clients/typecheck.ts
#                                             compiles against the types)
#   e. flowpilot serve                       (fresh database, own Redis prefix, random port,
#                                             generated secrets, engine on; waits for /health)
#   f. graphql-http audit                    (clients/audit.mjs: every MUST and SHOULD ok), and
#      the step kinds' JSON Schemas in Ajv's strict mode (clients/step-schemas.mjs)
#   g. GraphiQL in Chromium                  (web/graphiql/browser-test.mjs against the server)
#   h. graphql-ws reconnects                 (clients/reconnect.mjs: the stock client, as execution
#                                             followers and a dashboard, and Apollo Client's
#                                             GraphQLWsLink as a dashboard, across a SIGTERM and
#                                             restart, and a SIGKILL of one of two instances;
#                                             close codes 4419 and 4403)
# a and e stop the stage when they fail; the others are all run and the stage fails at the
# end if any did. The server log stays in target/clients/server.log (its tail is printed on a
# failure), and the server is always stopped and its database and Redis keys removed.
#
# Needs: Node 20+ with npm, PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres), Redis
# at 127.0.0.1:6379, createdb/dropdb, redis-cli, python3, curl, and Chromium
# ($CHROMIUM_PATH, default /usr/bin/chromium: Debian's package is installed with apt-get when
# it is missing). Outgoing traffic: npm and apt only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

BIN="${1:-target/debug/flowpilot}"
OUT="$(realpath -m "${CLIENTS_OUT:-$ROOT/target/clients}")"
PG_HOST="${CLIENTS_PG_HOST:-127.0.0.1}"
PG_PORT="${CLIENTS_PG_PORT:-5432}"
PG_USER="${CLIENTS_PG_USER:-postgres}"
REDIS_URL_CLIENTS="${CLIENTS_REDIS_URL:-redis://127.0.0.1:6379}"
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"

SECONDS=0
STAGES=()  # "name|seconds|status"
FAILED=0
SERVER_PID=""
DB=""
REDIS_PREFIX=""
JWT_SECRET=""
ENCRYPTION_KEY=""

step() { printf '\n==> %s (at %ss)\n' "$*" "$SECONDS"; }

if [[ ! -x "$BIN" ]]; then
  echo "clients: no server binary at $BIN (build it first, e.g. cargo build)" >&2
  exit 1
fi
BIN="$(realpath "$BIN")"
for tool in node npm python3 curl createdb dropdb pg_isready redis-cli; do
  command -v "$tool" >/dev/null || { echo "clients: $tool is not installed" >&2; exit 1; }
done
for file in web/graphiql/package-lock.json web/graphiql/build.mjs web/graphiql/browser-test.mjs; do
  [[ -f "$file" ]] || { echo "clients: $file is missing" >&2; exit 1; }
done

rm -rf "$OUT"
mkdir -p "$OUT"

# --- timing and results ------------------------------------------------------------------
elapsed_since() { # start (EPOCHREALTIME) -> seconds with one decimal
  python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$1" "$EPOCHREALTIME"
}

summary() {
  printf '\n==> clients stage summary\n'
  local entry name secs status
  for entry in "${STAGES[@]}"; do
    IFS='|' read -r name secs status <<<"$entry"
    printf '  %-44s %7ss  %s\n' "$name" "$secs" "$status"
  done
  printf '  %-44s %7ss\n' "total" "$SECONDS"
}

server_log_tail() {
  if [[ -s "$OUT/server.log" ]]; then
    echo "--- last 40 lines of $OUT/server.log ---" >&2
    tail -n 40 "$OUT/server.log" >&2
    echo "--- end of server log ---" >&2
  fi
}

# run_stage name fatal command...: runs the command, records its time and outcome. The
# command runs without errexit (a function called as `f || ...` would ignore it anyway), so
# each stage function below checks its own steps with && and `|| return`.
run_stage() {
  local name="$1" fatal="$2"
  shift 2
  step "$name"
  local start="$EPOCHREALTIME" status=0
  set +e
  "$@"
  status=$?
  set -e
  local secs
  secs="$(elapsed_since "$start")"
  if [[ "$status" -eq 0 ]]; then
    STAGES+=("$name|$secs|ok")
    echo "clients: $name: ok in ${secs}s"
  else
    STAGES+=("$name|$secs|FAILED (exit $status)")
    echo "clients: $name: FAILED (exit $status) after ${secs}s" >&2
    FAILED=1
    if [[ "$fatal" == fatal ]]; then
      echo "clients: stopping here: the stages after '$name' need it" >&2
      exit 1
    fi
  fi
}

# shellcheck source=.ci/lib.sh
source "$ROOT/.ci/lib.sh"

cleanup() {
  local status=$?
  trap - EXIT
  stop "$SERVER_PID"
  if [[ -n "$DB" ]]; then
    dropdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" --if-exists --force "$DB" 2>/dev/null \
      || dropdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" --if-exists "$DB" 2>/dev/null || true
  fi
  if [[ -n "$REDIS_PREFIX" ]]; then
    redis-cli -u "$REDIS_URL_CLIENTS" --scan --pattern "${REDIS_PREFIX}*" 2>/dev/null \
      | xargs -r redis-cli -u "$REDIS_URL_CLIENTS" del >/dev/null 2>&1 || true
  fi
  [[ "$status" -eq 0 ]] || server_log_tail
  summary
  if [[ "$status" -eq 0 ]]; then
    printf '\n==> clients passed in %ss (server log in %s)\n' "$SECONDS" "$OUT"
  else
    printf '\n==> clients FAILED in %ss (server log in %s)\n' "$SECONDS" "$OUT" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- a. npm ci, cached by the lockfile's hash ----------------------------------------------
npm_ci_cached() { # folder
  local dir="$1" stamp="$1/node_modules/.flowpilot-lock.sha256" want
  want="$(cat "$dir/package-lock.json" <(node --version) | sha256sum | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "$dir: node_modules matches package-lock.json, npm ci skipped"
    return 0
  fi
  echo "$dir: npm ci"
  rm -f "$stamp"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || return
  echo "$want" >"$stamp"
}
install_all() {
  npm_ci_cached clients && npm_ci_cached web/graphiql
}
run_stage "a. npm ci (clients, web/graphiql)" fatal install_all

# --- b. the checked-in GraphiQL assets match the pinned packages --------------------------
run_stage "b. GraphiQL assets (build.mjs --check)" continue node web/graphiql/build.mjs --check

# --- c. schema diff -----------------------------------------------------------------------
run_stage "c. schema diff" continue node clients/schema-diff.mjs

# --- d. README operations, codegen and tsc -------------------------------------------------
readme_codegen_tsc() {
  (
    cd clients \
      && node readme-operations.mjs \
      && node_modules/.bin/graphql-codegen --config codegen.ts \
      && node_modules/.bin/tsc --noEmit --strict -p tsconfig.json \
      && echo "tsc: .generated/graphql.ts, .generated/schema-types.ts and typecheck.ts compile"
  )
}
run_stage "d. README operations, codegen, tsc" continue readme_codegen_tsc

# --- e. the server on PostgreSQL + Redis ---------------------------------------------------
PORT=""
BASE_URL=""
start_server() {
  pg_isready -h "$PG_HOST" -p "$PG_PORT" -q \
    || { echo "clients: PostgreSQL is not answering at $PG_HOST:$PG_PORT" >&2; return 1; }
  redis-cli -u "$REDIS_URL_CLIENTS" ping >/dev/null \
    || { echo "clients: Redis is not answering at $REDIS_URL_CLIENTS" >&2; return 1; }

  DB="fp_clients_$$"
  REDIS_PREFIX="flowpilot-clients-$$:"
  createdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$DB" || return
  PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')" \
    || return
  BASE_URL="http://127.0.0.1:$PORT"
  echo "database $DB, Redis prefix $REDIS_PREFIX, $BASE_URL, log $OUT/server.log"

  JWT_SECRET="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')" || return
  ENCRYPTION_KEY="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')" || return
  local jwt_secret="$JWT_SECRET" encryption_key="$ENCRYPTION_KEY"
  # No rate limit or lockout may get in the way of the clients' requests, however many
  # checks run. Account mail goes to the log. The engine runs, so executions started
  # through the API run to the end.
  env -u FLOWPILOT_SMTP_URL -u FLOWPILOT_INTROSPECTION -u FLOWPILOT_HOST -u FLOWPILOT_PORT \
    DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB" \
    REDIS_URL="$REDIS_URL_CLIENTS" \
    FLOWPILOT_REDIS_PREFIX="$REDIS_PREFIX" \
    FLOWPILOT_JWT_SECRET="$jwt_secret" \
    FLOWPILOT_ENCRYPTION_KEY="$encryption_key" \
    FLOWPILOT_LOG_FORMAT=json FLOWPILOT_LOG=info \
    FLOWPILOT_RATE_LIMIT_PER_IP=0 FLOWPILOT_RATE_LIMIT_PER_EMAIL=0 \
    FLOWPILOT_LOCKOUT_THRESHOLD=1000000 \
    FLOWPILOT_RUN_ENGINE=true \
    "$BIN" serve --host 127.0.0.1 --port "$PORT" >"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    if curl -fsS "$BASE_URL/health" >/dev/null 2>&1; then
      echo "the server answers /health: $(curl -fsS "$BASE_URL/health")"
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "clients: the server exited during start-up" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "clients: the server did not answer /health within 60 s" >&2
  return 1
}
run_stage "e. flowpilot serve (PostgreSQL + Redis)" fatal start_server

server_alive() {
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "clients: the server is no longer running" >&2
    return 1
  fi
}

# --- f. graphql-http audit ------------------------------------------------------------------
audit() {
  node clients/audit.mjs "$BASE_URL/graphql" \
    && node clients/step-schemas.mjs "$BASE_URL/graphql" \
    && server_alive
}
run_stage "f. graphql-http audit" continue audit

# --- g. GraphiQL in Chromium ------------------------------------------------------------------
browser_test() {
  if [[ ! -x "$CHROMIUM_PATH" ]]; then
    if [[ ! -x /usr/bin/chromium ]]; then
      echo "installing Debian's chromium (no $CHROMIUM_PATH)"
      apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
        || return
    fi
    CHROMIUM_PATH=/usr/bin/chromium
  fi
  CHROMIUM_PATH="$CHROMIUM_PATH" node web/graphiql/browser-test.mjs "$BASE_URL" && server_alive
}
run_stage "g. GraphiQL browser test" continue browser_test

# --- h. graphql-ws reconnects -------------------------------------------------------------------
# Two more instances over the same database and Redis, stopped and killed under the stock
# graphql-ws client (clients/reconnect.mjs).
reconnects() {
  FLOWPILOT_BIN="$(realpath "$BIN")" \
    DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB" \
    REDIS_URL="$REDIS_URL_CLIENTS" \
    FLOWPILOT_REDIS_PREFIX="$REDIS_PREFIX" \
    FLOWPILOT_JWT_SECRET="$JWT_SECRET" \
    FLOWPILOT_ENCRYPTION_KEY="$ENCRYPTION_KEY" \
    OUT_DIR="$OUT" \
    node clients/reconnect.mjs && server_alive
}
run_stage "h. graphql-ws reconnects" continue reconnects

if grep -q '"level":"ERROR"' "$OUT/server.log"; then
  echo "clients: the server logged errors (not failing the stage on them):" >&2
  grep '"level":"ERROR"' "$OUT/server.log" | head -n 20 >&2
fi

if [[ "$FAILED" -ne 0 ]]; then
  exit 1
fi
