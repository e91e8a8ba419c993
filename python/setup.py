"""Builds the Swift library libpkmstore.so and puts it inside the package.

`pip install ./python` runs `swift build -c release --product pkmstore` in the repository this
directory belongs to (swift from PATH, else /opt/swift/usr/bin) and copies the library beside
the Python modules. With PKMSTORE_LIBRARY=/path/to/libpkmstore.so set, that file is copied
instead and nothing is built. The library needs the Swift runtime it was built with at run
time (its RUNPATH names the toolchain's lib directory).
"""
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def library():
    given = os.environ.get("PKMSTORE_LIBRARY")
    if given:
        return given
    if not os.path.exists(os.path.join(ROOT, "Package.swift")):
        raise SystemExit("pkmstore: set PKMSTORE_LIBRARY to a built libpkmstore.so (no Swift package at " + ROOT + ")")
    swift = shutil.which("swift") or "/opt/swift/usr/bin/swift"
    subprocess.check_call([swift, "build", "-c", "release", "--product", "pkmstore"], cwd=ROOT)
    return os.path.join(ROOT, ".build", "release", "libpkmstore.so")


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "pkmstore")
        os.makedirs(target, exist_ok=True)
        shutil.copy2(library(), os.path.join(target, "libpkmstore.so"))


class PlatformDistribution(Distribution):
    """The wheel holds a native library, so it is tagged for this platform."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=PlatformDistribution)
