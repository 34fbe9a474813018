# Two commands: `make demo` and `make test`. Each creates .venv on first use.
# torch is pinned to 2.13.0 here: on our machines that is a local CPU wheel, while an
# unpinned `torch` would pull a multi-GB CUDA build. Users elsewhere: `pip install lazyrich`
# with their own torch >= 2.3.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[experiments,dev,ray]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python -m lazyrich.demo

test: $(BIN)/.installed
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest tests

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/ntk_speed.py

clean:
	rm -rf $(VENV) runs
