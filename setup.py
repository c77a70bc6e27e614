"""Builds libheadroom with CMake and puts libheadroom.so next to the headroom
package, where the ctypes loader looks first after $HEADROOM_LIB.

Everything else about the package is in pyproject.toml. Set
HEADROOM_SKIP_LIB=1 to build a wheel without the library (it is then found
through $HEADROOM_LIB or the system path at run time).
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


setup(cmdclass={"build_py": BuildWithLib}, distclass=BinaryDistribution)
