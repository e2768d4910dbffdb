# The two commands of the README's quick start. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/agentmail: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/agentmail
	$(BIN)/agentmail demo

test: $(BIN)/agentmail
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/agentmail
	$(BIN)/ruff check agentmail tests migrations benchmarks
	$(BIN)/mypy agentmail

bench: $(BIN)/agentmail
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache
