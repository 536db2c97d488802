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

.PHONY: install demo test lint browser clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --progress-bar off -e '.[dev,elpv,weights]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python ray_jobs/demo.py --data $(DEMO_DATA) $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

# The upload page is tested in a real headless browser: Debian's chromium + chromedriver.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver)

test: lint browser
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .lensops mlruns data
