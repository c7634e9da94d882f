# Every target that runs something first makes sure the machine has what it needs (deps).
SHELL := /bin/bash
ifneq (,$(wildcard .env))
include .env
export
endif

VENV := .venv
CLI := $(VENV)/bin/energy-monitor
PYTEST := $(VENV)/bin/pytest

.PHONY: deps up down status test test-unit test-cluster test-compose compose-up compose-down bench bench-quick bench-stages bench-detection bench-flood clean-var

deps:
	@scripts/bootstrap.sh

up: deps
	@$(CLI) up

down:
	@$(CLI) down

status:
	@$(CLI) status

# Three workers (pytest-xdist), each with its own broker and Spark: most of a test's time is
# waiting on triggers and scrapes, so three overlap well on two cores. TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 3
test: deps
	$(PYTEST) -q -ra -n $(TEST_WORKERS) --dist worksteal -m "not compose_run and not cluster"

# A 3-broker KRaft cluster as local processes: a broker SIGKILLed under load (tests/test_cluster.py).
test-cluster: deps
	$(PYTEST) -q -ra -m cluster

test-unit: deps
	$(PYTEST) -q -m "not kafka and not spark and not compose_run and not cluster"

# The docker compose stack, run for real: starts a Docker engine if none answers. With the vfs
# storage driver creating a container copies its image's layers, and in one CI run `up` waited
# out docker-compose's default 60 s read timeout on the engine creating Spark's container.
test-compose: deps
	scripts/compose-local.sh daemon
	COMPOSE_HTTP_TIMEOUT=300 $(PYTEST) -q -ra -m compose_run

# docker compose on a machine without an image registry (docs/operations.md, "Docker compose").
compose-up: deps
	scripts/compose-local.sh up

compose-down:
	scripts/compose-local.sh down

# Ours (BASELINE=on and off) vs the original query, side by side (docs/performance.md); writes
# bench/results/latest.{json,png};
# then the highest live prod rate each keeps up with for 5 minutes (added to latest.json).
# Then the history at 1,000 households x 24 h: size per day, commit and page times (history.json).
# Then fleets reading every 30 minutes, a day's backlog drained, then live batches: 100,000
# simulated households with each state operator (fleet.json), and 1,000,000 real ones
# (fleet-million.json).
bench: deps
	$(VENV)/bin/python -m bench.run
	$(VENV)/bin/python -m bench.sustained
	$(VENV)/bin/python -m bench.history_tables
	$(VENV)/bin/python -m bench.fleet --state-operators jvm,python
	$(VENV)/bin/python -m bench.fleet --households 1000000 --use real --json fleet-million.json

# What each rule catches: 672 real households (bench/data/) and 40 simulated ones with labelled
# injected events, both rules' incidents merged, in prod mode; tuning and reporting halves, 95%
# intervals (docs/performance.md): bench/results/detection.{json,png}.
bench-detection: deps
	$(VENV)/bin/python -m bench.detection

# A million new households at once, then a normal case, through the CLI with the default settings
# (docs/operations.md, "Memory, disk and the household bound"): bench/results/flood.json.
bench-flood: deps
	$(VENV)/bin/python -m bench.flood --output bench/results/flood.json

# Where a batch of our job spends its time, per Spark stage (docs/performance.md): bench/results/stages.json.
bench-stages: deps
	$(VENV)/bin/python -m bench.stages

# The same runs at small sizes (CI): only checks that the benchmark completes.
bench-quick: deps
	$(VENV)/bin/python -m bench.run --quick --output var/bench-quick
	$(VENV)/bin/python -m bench.sustained --quick --output var/bench-quick
	$(VENV)/bin/python -m bench.history_tables --households 50 --hours 1 --output var/bench-quick/history.json
	$(VENV)/bin/python -m bench.detection --quick --output var/bench-quick

clean-var: down
	rm -rf var
