# Thin wrapper over CMake. Each build type has its own folder under build/.
#   make run       install what is missing, build, run headroom's main job
#   make test      install, build, run every test (debug, address+undefined
#                  sanitizers, thread sanitizer on threaded tests, pytest)
#   make bench     build Release and write bench/results/*.md
#   make sanitize  the sanitizer builds and their tests only
#   make format    clang-format every C file in place
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE ?= cmake
PYTHON ?= /usr/bin/python3

.PHONY: all deps build debug asan tsan run test test-debug test-asan test-tsan \
        test-python bench sanitize format tidy clean

all: build

deps:
	@scripts/install-deps

build/release/Makefile: CMakeLists.txt
	$(CMAKE) -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DHR_WERROR=ON
build/debug/Makefile: CMakeLists.txt
	$(CMAKE) -S . -B build/debug -DCMAKE_BUILD_TYPE=Debug -DHR_WERROR=ON
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

run: build
	./build/release/headroom status

test-debug: debug
	cd build/debug && ctest --output-on-failure -j $(JOBS)
test-asan: asan
	cd build/asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS)
test-tsan: tsan
	cd build/tsan && ctest --output-on-failure -j $(JOBS) -L threads --no-tests=ignore
test-python: build
	@if ls tests/python/test_*.py >/dev/null 2>&1; then \
	  HEADROOM_LIB=$(CURDIR)/build/release/libheadroom.so \
	  HEADROOM_CLI=$(CURDIR)/build/release/headroom \
	  PYTHONPATH=$(CURDIR)/python $(PYTHON) -m pytest -q tests/python; \
	else echo "no Python tests yet"; fi

test: test-debug test-asan test-tsan test-python

sanitize: test-asan test-tsan

bench: build
	scripts/bench

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

tidy: build/debug/Makefile
	clang-tidy -p build/debug $$(git ls-files 'src/*.c' 'tools/*.c')

clean:
	rm -rf build
