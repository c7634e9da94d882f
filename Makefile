# Every target that runs something first makes sure the machine has what it needs (deps).
SHELL := /bin/bash
ifneq (,$(wildcard .env))
include .env
export
endif

VENV := .venv
CLI := $(VENV)/bin/energy-monitor
PYTEST := $(VENV)/bin/pytest

.PHONY: deps up down status test test-unit clean-var

deps:
	@scripts/bootstrap.sh

up: deps
	@$(CLI) up

down:
	@$(CLI) down

status:
	@$(CLI) status

test: deps
	$(PYTEST) -q -ra

test-unit: deps
	$(PYTEST) -q -m "not kafka and not spark"

clean-var: down
	rm -rf var
