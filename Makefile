# Set-up is two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean bench chromium

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# torch first and pinned: the CPU wheel on disk; an unpinned torch would pull a CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install "torch==2.13.0"
	$(BIN)/pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Each step says how long it took. Threads: the CLI's default (README, Threads). Re-running works:
# the training run replaces the previous demo run (--overwrite says so on stderr).
DEMO_STEPS = "summary tiny-gpt --max-level 1" \
	"memory llama-2-7b --batch 1 --seq 2048 --precision bf16-mixed --optimizer adamw" \
	"verify tiny-gpt --seq 64 --batch 4" \
	"train digits-cnn --data digits --epochs 3 --out runs/demo --overwrite"

demo: $(STAMP)
	@for step in $(DEMO_STEPS); do \
	  echo "$$ layerwise $$step"; start=$$(date +%s%N); \
	  $(BIN)/layerwise $$step || exit $$?; \
	  echo "[demo] layerwise $$step: $$(( ($$(date +%s%N) - start) / 1000000 )) ms"; echo; \
	done

# The browser tests drive Debian's headless Chromium (tests/serve/browser.py); installed once, quietly.
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# Two workers on two cores; one torch thread each, so they do not oversubscribe the cores.
test: $(STAMP) chromium
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 tests

bench: $(STAMP)
	$(BIN)/python bench/accuracy.py

clean:
	rm -rf $(VENV) runs .pytest_cache
