# Two entry points: `make demo` (the main job on embedded defaults) and `make test`.
# Both create the virtual environment on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DATA ?= data/elpv
# 4 epochs keep the whole demo under 10 minutes on 2 CPU cores; configs/elpv.yaml trains 8.
DEMO_ARGS ?= --set train.epochs=4

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo test unit lint system-packages clean

install: $(STAMP)

# uv installs the 7 GB of wheels (torch's CUDA libraries among them) in parallel: about a minute
# from a cold cache, where pip unpacks and compiles them one by one for five to six.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --progress-bar off 'uv>=0.5'
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -e '.[dev,elpv,weights,geo]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python ray_jobs/demo.py --data $(DEMO_DATA) $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

# Debian packages the tests drive for real, installed once when missing: a headless browser
# (upload page), promtool (Prometheus config and alert rules) and PostgreSQL (MLflow server).
SYSTEM_TOOLS := chromium:chromium chromedriver:chromium-driver promtool:prometheus amtool:prometheus-alertmanager prometheus-pushgateway:prometheus-pushgateway initdb:postgresql
system-packages:
	@missing=""; for pair in $(SYSTEM_TOOLS); do tool=$${pair%%:*}; \
	  command -v $$tool >/dev/null || ls /usr/lib/postgresql/*/bin/$$tool >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; [ -z "$$missing" ] || ($(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing)

test: lint system-packages
	$(BIN)/pytest

# The unit tier: pure logic, no Ray or servers, under a minute.
unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

clean:
	rm -rf $(VENV) .lensops mlruns data
