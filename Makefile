# Two entry points that work on a fresh machine: `make demo` and `make test`.
PY      := .venv/bin/python
STAMP   := .venv/.installed
TEST_STAMP := .venv/.installed-test
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-slow lint clean review-deps

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build lies on local disk; a looser pin pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The tests also cover the optional Ray engine of `edgefusion data`, the review web app and the
# OpenVINO backend, so they install those extras.
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,ray,review,openvino]'
	touch $(TEST_STAMP)

# The review app's browser tests drive Debian's Chromium, and its database tests start a
# PostgreSQL server from Debian's package: installed here when missing (as root); otherwise
# those tests are skipped, saying why.
review-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="chromium"; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "note: $$missing missing and not root: run apt-get install $$missing, or those tests are skipped"; fi; \
	fi

demo: $(STAMP)
	.venv/bin/edgefusion demo --out outputs/demo

test: $(TEST_STAMP) review-deps
	$(PY) -m pytest

# The slow tests (full-size SD-v1.4 shapes, random weights): the whole recipe through the command
# line at 256 px, and the BK-SDM-Tiny U-Net through ONNX. Minutes and up to 12 GB of memory.
test-slow: $(TEST_STAMP)
	$(PY) -m pytest -m slow -s tests/test_real_scale.py tests/export/test_full_size.py

lint: $(STAMP)
	.venv/bin/ruff check src tests

clean:
	rm -rf .venv outputs
