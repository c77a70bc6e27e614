#!/usr/bin/env python3
"""libheadroom needs the C runtime alone.

Reads the DT_NEEDED entries of a built libheadroom.so (readelf -d) and fails
when one is not libc, libdl, libpthread, libm or the dynamic loader: the
library is mapped into every inference process, which needs no SQLite, HTTP
server or JSON parser. With --sanitizer the sanitizer runtimes (libasan,
libubsan, libtsan) that a sanitizer build links, and libgcc_s that they link
it with for unwinding, are allowed too.

usage: check_core_deps.py LIBHEADROOM_SO [--sanitizer]
"""
import re
import subprocess
import sys

ALLOWED = re.compile(r"^(libc|libdl|libpthread|libm)\.so\.\d+$|^ld-linux[-\w.]*\.so\.\d+$")
SANITIZERS = re.compile(r"^lib(asan|ubsan|tsan|lsan|gcc_s)\.so\.\d+$")


def main(argv):
    if len(argv) not in (2, 3) or (len(argv) == 3 and argv[2] != "--sanitizer"):
        sys.exit(__doc__)
    out = subprocess.run(["readelf", "-d", argv[1]], capture_output=True, text=True, check=True)
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out.stdout)
    if not needed:
        sys.exit(f"check_core_deps: no NEEDED entries read from {argv[1]}")
    bad = [n for n in needed
           if not ALLOWED.match(n) and not (len(argv) == 3 and SANITIZERS.match(n))]
    print(f"{argv[1]} needs: {', '.join(needed)}")
    for n in bad:
        print(f"check_core_deps: libheadroom needs {n}, beyond the C runtime")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
