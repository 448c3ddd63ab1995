# The two front-door commands are `make demo` and `make test` (see README.md).
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
DEMO   ?= demo-night
SUDO    = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup bytecode system-deps demo test lint typecheck bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# What pip does when it installs a package: every module compiled once, not again by each run
# (and each worker's fork server). An environment with PYTHONDONTWRITEBYTECODE never writes them
# itself. Python checks each one against its source, so a stale one is never used.
bytecode: setup
	@$(PY) -m compileall -q -x '/(\.venv|\.cache|\.mypy-path|tests|$(DEMO))/' .

# The tests open our files with the tools a département has: OpenSSL, xmllint, OpenSSH;
# promtool (Debian's prometheus) checks the metrics file and the alert rules (tests/test_deploy_prometheus.py);
# unzip and GNU time for the benchmark (bench/pipeline.sh, peak RSS);
# Node.js/npm only to fetch Prism, DINUM's spec validator for the HubEE contract test.
system-deps:
	@missing=""; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v xmllint >/dev/null || missing="$$missing libxml2-utils"; \
	command -v sftp    >/dev/null || missing="$$missing openssh-client"; \
	[ -x /usr/sbin/sshd ]          || missing="$$missing openssh-server"; \
	command -v unzip   >/dev/null || missing="$$missing unzip"; \
	[ -x /usr/bin/time ]           || missing="$$missing time"; \
	command -v npm     >/dev/null || missing="$$missing nodejs npm"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# The HubEE contract test (tests/transport/test_hubee_contract.py) validates every request against DINUM's spec with Prism.
	@command -v npm >/dev/null || { echo "npm (Node.js) is required for the HubEE contract test"; exit 1; }
	@[ -x .cache/prism/node_modules/.bin/prism ] || \
	  npm install --no-audit --no-fund --prefix .cache/prism @stoplight/prism-cli@5.16.0

# The night as the CNAF runs it, then the other half: every département takes its files in
# (one process for all 102, see docs/receive.md). The last lines say where to look: the CNAF
# side's folders, then receive's totals and where the CSV/Parquet outputs are (keep them last).
demo: setup bytecode
	rm -rf $(DEMO)
	$(VENV)/bin/flux-pmi demo $(DEMO) --departments all
	$(VENV)/bin/flux-pmi run --config $(DEMO)/flux-pmi.toml
	@echo "sent (CNAF side): $(DEMO)/drop/<département>/*.p7m; archive, trace and rejects report in" \
	  "$(DEMO)/archive, $(DEMO)/trace, $(DEMO)/reports; flux-pmi status --config $(DEMO)/flux-pmi.toml"
	@$(VENV)/bin/flux-pmi receive --config-dir $(DEMO)/receive --once

# The benchmark (docs/performance.md): a national night and a BENCH_DAYS-day catch-up over SFTP to
# one real sshd per département, beside the shell pipeline over the same files. It reports, not asserts.
BENCH_DAYS ?= 30
BENCH_ARGS ?=
bench: setup system-deps bytecode
	$(PY) bench/run.py --days $(BENCH_DAYS) $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

# The root is the package: mypy reads it as flux_pmi through a link (tests excluded, see pyproject).
typecheck: setup
	@mkdir -p .mypy-path && ln -sfn .. .mypy-path/flux_pmi
	MYPYPATH=.mypy-path $(VENV)/bin/mypy -p flux_pmi

test: setup system-deps bytecode lint typecheck
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .ruff_cache *.egg-info
