# Thin wrapper over CMake. Each build type has its own folder under build/.
#   make run       install what is missing, build, run headroom watch (its
#                  embedded defaults; Ctrl-C ends it)
#   make test      install, build, run every test (debug, with a few seconds
#                  of each fuzz harness, address+undefined sanitizers, thread
#                  sanitizer on threaded tests, pytest)
#   make bench     build Release and write bench/results/*.md
#   make sanitize  the sanitizer builds and their tests only
#   make format    clang-format every C file in place
#   make packaging write the files the CLI's tables describe: the example
#                  config, the man page, bash completion, and the broker's
#                  protocol schema (tests keep them equal)
MAKEFLAGS += --no-print-directory
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE ?= cmake
PYTHON ?= /usr/bin/python3

.PHONY: all deps build debug asan tsan run test test-debug test-asan test-tsan \
        test-python bench sanitize format tidy clean packaging

all: build

deps:
	@scripts/install-deps

build/release/Makefile: CMakeLists.txt
	$(CMAKE) -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DHR_WERROR=ON
build/debug/Makefile: CMakeLists.txt
	$(CMAKE) -S . -B build/debug -DCMAKE_BUILD_TYPE=Debug -DHR_WERROR=ON -DHR_FUZZ=ON
build/asan/Makefile: CMakeLists.txt
	$(CMAKE) -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DHR_WERROR=ON \
	  -DHR_SANITIZE=address,undefined
build/tsan/Makefile: CMakeLists.txt
	$(CMAKE) -S . -B build/tsan -DCMAKE_BUILD_TYPE=Debug -DHR_WERROR=ON \
	  -DHR_SANITIZE=thread

build: deps build/release/Makefile
	$(CMAKE) --build build/release -j $(JOBS)
debug: deps build/debug/Makefile
	$(CMAKE) --build build/debug -j $(JOBS)
asan: deps build/asan/Makefile
	$(CMAKE) --build build/asan -j $(JOBS)
tsan: deps build/tsan/Makefile
	$(CMAKE) --build build/tsan -j $(JOBS)

# The live view on a terminal (JSON lines when piped); Ctrl-C ends it,
# committing history and giving the terminal back.
run: build
	./build/release/headroom watch

test-debug: debug
	cd build/debug && ctest --output-on-failure -j $(JOBS)
test-asan: asan
	cd build/asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS)
test-tsan: tsan
	cd build/tsan && ctest --output-on-failure -j $(JOBS) -L threads --no-tests=ignore
# The Python tests run twice:
#  - in build/venv, a virtual environment made with $(PYTHON) -m venv and
#    filled from tests/python/requirements.txt (torch 2.13.0, pytest, numpy,
#    wheel; every version pinned). pip runs only when the stamp file is
#    missing or older than the requirements, so after the first run (a few
#    minutes: torch is large) this costs nothing. VENV_PIP_ARGS goes to pip
#    (e.g. an --index-url of CPU builds of torch where no CPU wheel lies on
#    disk). Every test runs here.
#  - with Debian's $(PYTHON) (python3-torch: torch 1.13), the test files that
#    use torch only, so a user still on PyTorch 1.x stays covered; about
#    15 seconds. They are the files that call torch_or_skip() or import torch
#    (the GPU ones among them skip without a device, as in the venv).
VENV ?= build/venv
VENV_PIP_ARGS ?=
PY_REQUIREMENTS := tests/python/requirements.txt
PY_ENV = HEADROOM_LIB=$(CURDIR)/build/release/libheadroom.so \
  HEADROOM_CLI=$(CURDIR)/build/release/headroom PYTHONPATH=$(CURDIR)/python
PY_TORCH_TESTS = $(shell grep -l -e 'torch_or_skip' -e 'import torch' tests/python/test_*.py)

$(VENV)/.installed: $(PY_REQUIREMENTS)
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q $(VENV_PIP_ARGS) -r $(PY_REQUIREMENTS)
	@touch $@

test-python: build $(VENV)/.installed
	$(PY_ENV) $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/python
	@if $(PYTHON) -c 'import torch, pytest' 2>/dev/null; then \
	  echo "torch tests again on $(PYTHON): torch $$($(PYTHON) -c 'import torch; print(torch.__version__)')"; \
	  $(PY_ENV) $(PYTHON) -m pytest -q -p no:cacheprovider $(PY_TORCH_TESTS); \
	else echo "$(PYTHON) has no torch or pytest: the torch tests ran on torch 2.13.0 only"; fi

test: test-debug test-asan test-tsan test-python

sanitize: test-asan test-tsan

bench: build
	scripts/bench

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

# Written by the binary from its option tables, and committed: edit the
# tables (src/util, tools/headroom), then run this.
packaging: build
	./build/release/headroom config --example > packaging/headroom.conf.example
	./build/release/headroom __man > packaging/man/headroom.1
	./build/release/headroom __completion > packaging/completion/headroom.bash
	./build/release/headroom broker --schema > docs/broker-protocol.schema.json

tidy: build/debug/Makefile
	clang-tidy -p build/debug $$(git ls-files 'src/*.c' 'tools/*.c')

clean:
	rm -rf build
