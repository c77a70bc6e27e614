#!/bin/sh
# Builds the libFuzzer harnesses with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer into build/fuzz/ (see README.md).
set -eu
cd "$(dirname "$0")/../.."
CC=${CC:-clang-14}
OUT=build/fuzz
mkdir -p "$OUT/obj"
FLAGS="-g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
  -fno-omit-frame-pointer -D_GNU_SOURCE -DHR_BUILDING=1 -DHR_VERSION_STRING=\"fuzz\"
  -Iinclude -Isrc $(pkg-config --cflags sqlite3 libmicrohttpd libcjson)"
objs=""
for src in $(find src -name '*.c' | sort); do
  obj="$OUT/obj/$(echo "$src" | tr / _).o"
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ]; then
    $CC $FLAGS -c "$src" -o "$obj"
  fi
  objs="$objs $obj"
done
LIBS="$(pkg-config --libs sqlite3 libmicrohttpd libcjson) -lpthread -ldl -lm"
for h in trace config; do
  $CC $FLAGS -fsanitize=fuzzer "tests/fuzz/fuzz_$h.c" $objs $LIBS -o "$OUT/fuzz_$h"
done
echo "built $OUT/fuzz_trace and $OUT/fuzz_config"
