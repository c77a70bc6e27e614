"""Builds libheadroom with CMake and puts libheadroom.so next to the headroom
package, where the ctypes loader looks first after $HEADROOM_LIB.

Everything else about the package is in pyproject.toml. Set
HEADROOM_SKIP_LIB=1 to build a wheel without the library (it is then found
through $HEADROOM_LIB or the system path at run time).

The wheel is tagged py3-none-<platform>: the library is loaded with ctypes,
so one wheel serves every Python 3 on that platform, but not other platforms.
The sdist carries the C sources (MANIFEST.in), so a wheel builds from it.
"""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithLib(build_py):
    def run(self):
        super().run()
        if os.environ.get("HEADROOM_SKIP_LIB") == "1":
            return
        build = os.path.join(HERE, "build", "python-lib")
        try:
            subprocess.run(["cmake", "-S", HERE, "-B", build, "-DCMAKE_BUILD_TYPE=Release"],
                           check=True)
            subprocess.run(["cmake", "--build", build, "--target", "headroom", "-j2"],
                           check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            raise SystemExit("headroom: building libheadroom with CMake failed (%s); run "
                             "scripts/install-deps, or set HEADROOM_SKIP_LIB=1 to install the "
                             "package without the library" % e)
        dest = os.path.join(self.build_lib, "headroom")
        os.makedirs(dest, exist_ok=True)
        shutil.copy2(os.path.join(build, "libheadroom.so"), os.path.join(dest, "libheadroom.so"))


class BinaryDistribution(Distribution):
    # The wheel carries a compiled library, so it must be tagged for a platform.
    def has_ext_modules(self):
        return os.environ.get("HEADROOM_SKIP_LIB") != "1"


cmdclass = {"build_py": BuildWithLib}
try:
    from wheel.bdist_wheel import bdist_wheel

    class BdistWheel(bdist_wheel):
        # No CPython extension: any Python 3 loads the library through
        # ctypes, so the tag names the platform alone (py3-none-linux_x86_64).
        def get_tag(self):
            _, _, plat = super().get_tag()
            return ("py3", "none", plat) if self.root_is_pure is False else ("py3", "none", "any")

    cmdclass["bdist_wheel"] = BdistWheel
except ImportError:  # no wheel package: sdists still build
    pass

setup(cmdclass=cmdclass, distclass=BinaryDistribution)
