# Two entry points that work on a fresh machine: `make demo` and `make test`.
PY      := .venv/bin/python
STAMP   := .venv/.installed
TEST_STAMP := .venv/.installed-test
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build lies on local disk; a looser pin pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The tests also cover the optional Ray engine of `edgefusion data`, so they install its extra.
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,ray]'
	touch $(TEST_STAMP)

demo: $(STAMP)
	.venv/bin/edgefusion demo --out outputs/demo

test: $(TEST_STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	.venv/bin/ruff check src tests

clean:
	rm -rf .venv outputs
