#!/usr/bin/env bash
# `make prod-up` / `make prod-down`: the production stack of deploy/ on this machine.
#   up:   PostgreSQL and RabbitMQ answering, the databases created, DAGSTER_HOME holding a link to
#         deploy/dagster.yaml; then honcho runs deploy/Procfile in the background (pid file and
#         log under .monitoring/prod/), and this waits until the Dagster UI and the MLflow
#         server answer and prints their addresses.
#   down: stops honcho and every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"
RUN_DIR="$PWD/.monitoring/prod"
PID_FILE="$RUN_DIR/honcho.pid"
LOG="$RUN_DIR/honcho.log"
START_TIMEOUT="${MONITORING_PROD_START_TIMEOUT:-300}"

load_env() {
    # deploy/prod.env's variables that are not set already, paths made absolute: what
    # MONITORING_PROFILE=prod gives the CLI (settings.profile_environ), so both read one file.
    eval "$(MONITORING_PROFILE=prod "$BIN/python" -c '
import os, shlex
from monitoring_pipelines.settings import profile_environ
for name, value in profile_environ(os.environ).items():
    print(f"export {name}={shlex.quote(value)}")
')"
    export MONITORING_PROFILE=prod PATH="$BIN:$PATH"
}

running() {
    [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null
}

answers() {
    "$BIN/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' \
        "$1" 2>/dev/null
}

urls() {
    echo "Dagster UI:    http://127.0.0.1:$MONITORING_PROD_WEBSERVER_PORT"
    echo "MLflow server: $MLFLOW_TRACKING_URI"
    echo "logs:          $LOG"
    echo "use it:        MONITORING_PROFILE=prod make demo (or monitoring-pipelines ...)"
}

up() {
    load_env
    if running; then
        echo "already running (honcho pid $(cat "$PID_FILE"))"
        urls
        return 0
    fi
    mkdir -p "$RUN_DIR" "$MONITORING_HOME" "$DAGSTER_HOME" "$DAGSTER_STORAGE_DIR" \
        "$DAGSTER_COMPUTE_LOGS_DIR" "$MLFLOW_ARTIFACT_ROOT"
    # A link, not a copy: the one dagster.yaml is deploy's, and the CLI never rewrites it.
    ln -sfn "$PWD/deploy/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
    "$BIN/python" -c '
import os
from monitoring_pipelines.devservices import ensure_database, ensure_rabbitmq
ensure_rabbitmq()
for name in ("MONITORING_WAREHOUSE_URL", "DAGSTER_PG_URL", "MLFLOW_BACKEND_STORE_URI"):
    ensure_database(os.environ[name])
'
    # The instance's tables, once, before the webserver, the daemon and the workers would all
    # create them at the same moment on a new database.
    "$BIN/dagster" instance migrate >"$RUN_DIR/migrate.log" 2>&1 ||
        { cat "$RUN_DIR/migrate.log" >&2; return 1; }
    nohup "$BIN/honcho" start -f deploy/Procfile -e /dev/null -d "$PWD" >"$LOG" 2>&1 &
    echo $! >"$PID_FILE"
    local web="http://127.0.0.1:$MONITORING_PROD_WEBSERVER_PORT/server_info"
    local waited=0
    until answers "$web" && answers "$MLFLOW_TRACKING_URI/health"; do
        if ! running; then
            echo "prod-up: the stack stopped while starting; the end of $LOG:" >&2
            tail -n 30 "$LOG" >&2
            rm -f "$PID_FILE"
            return 1
        fi
        if ((waited >= START_TIMEOUT)); then
            echo "prod-up: no answer from the UI or MLflow after ${START_TIMEOUT}s; see $LOG" >&2
            return 1
        fi
        sleep 2
        waited=$((waited + 2))
    done
    echo "production stack up in ${waited}s (honcho pid $(cat "$PID_FILE"))"
    urls
}

down() {
    if ! running; then
        echo "not running"
        rm -f "$PID_FILE"
        return 0
    fi
    local pid
    pid="$(cat "$PID_FILE")"
    # honcho sends SIGTERM to each process group it started, and SIGKILL 5 s later.
    kill -TERM "$pid"
    for _ in $(seq 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    # Whatever is left of the groups honcho started (their leaders' pids are in its log).
    for group in $(sed -n 's/.* started (pid=\([0-9]*\)).*/\1/p' "$LOG"); do
        kill -KILL -- "-$group" 2>/dev/null || true
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$PID_FILE"
    echo "production stack stopped"
}

case "${1:-}" in
up) up ;;
down) down ;;
*)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
