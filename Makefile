# Each target installs what it needs when it is missing, so any of them works first on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# MONITORING_PROFILE=prod (and prod-up, prod-down): the settings come from deploy/prod.env.
ifneq ($(MONITORING_PROFILE),prod)
ifeq ($(filter prod-up prod-down,$(MAKECMDGOALS)),)
export MONITORING_HOME ?= $(CURDIR)/.monitoring
export DAGSTER_HOME ?= $(MONITORING_HOME)/dagster
endif
endif

.PHONY: demo test ui bench bench-detection lint format system-packages clean prod-up prod-down

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -c requirements.lock -e '.[dev]'
	touch $@

system-packages:
	bash scripts/ensure-system-packages.sh

demo: $(STAMP)
	$(BIN)/monitoring-pipelines demo

test: $(STAMP) system-packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n 2 --dist loadfile

ui: $(STAMP)
	$(BIN)/monitoring-pipelines ui

# SCALE=N: N x the demo's series; BENCH=load|ingest|scoring|alerting|reports: one part only.
SCALE ?= 1
BENCH ?= all
bench: $(STAMP) system-packages
	SCALE=$(SCALE) BENCH=$(BENCH) $(BIN)/python -m benchmarks.run
	case "$(BENCH)" in all|scoring) SCALE=$(SCALE) $(BIN)/python -m benchmarks.models;; esac
	case "$(BENCH)" in all|alerting) $(BIN)/python -m benchmarks.alerting;; esac
	case "$(BENCH)" in all|reports) $(BIN)/python -m benchmarks.reports;; esac

# Detection quality per member and ensemble: SKAB (../shared/datasets/skab, when present), then the demo.
bench-detection: $(STAMP)
	$(BIN)/python -m benchmarks.detection

# The production stack of deploy/ on this machine (PostgreSQL, RabbitMQ, webserver, daemon, celery
# workers, MLflow server) in the background; prod-down stops every process prod-up started.
prod-up: $(STAMP)
	bash deploy/prod.sh up

prod-down:
	bash deploy/prod.sh down

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(MONITORING_HOME)
