# vggserve: every entry point a newcomer needs. `make serve` and `make test`
# each build the virtual environment on first use.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
MODELS ?= models
NAME   ?= vgg-mini
PORT   ?= 8500

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv test lint docs protos check-protos train serve loadtest bench clean

venv: $(STAMP)

# requirements-nodeps.txt: tritonclient (a test client) declares protobuf<7 and
# ml-dtypes<=0.5.4 yet works with our pins; what else it needs is in
# requirements-dev.txt. docs/dependencies.md says why `pip check` flags it.
$(STAMP): requirements.txt requirements-ray.txt requirements-dev.txt requirements-nodeps.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

## The README's test command: lint and type checks, then the whole pytest suite.
test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy model service vggclient vggcommon vggserve_cli loadtest

## The documentation site (mkdocs.yml, docs/) into site/; --strict fails on a broken
## link, a dead anchor or a page left out of the nav.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

## Regenerate the gRPC Python code from protos/ (the one way it is made).
protos: $(STAMP)
	$(PY) scripts/gen_protos.py

## Fail if the checked-in generated code differs from what `make protos` would write.
check-protos: $(STAMP)
	$(PY) scripts/gen_protos.py --check

## Train and export the default model (models/vgg-mini/<next version>).
train: $(STAMP)
	$(VENV)/bin/vggserve train --output $(MODELS) --name $(NAME)

## The README's main command: train the default model if none exists, then serve it.
serve: $(STAMP)
	$(VENV)/bin/vggserve train --output $(MODELS) --name $(NAME) --skip-if-exists
	$(VENV)/bin/vggserve serve --model-dir $(MODELS)/$(NAME) --port $(PORT)

loadtest: $(STAMP)
	$(VENV)/bin/vggserve loadtest --model-dir $(MODELS)/$(NAME)

bench: $(STAMP)
	$(VENV)/bin/vggserve bench --model-dir $(MODELS)/$(NAME)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache site
