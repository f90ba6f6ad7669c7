"""setuptools shim: cffi's out-of-line API-mode module is declared here.

pyproject.toml holds all metadata; ``cffi_modules`` has no pyproject form.
"""
from setuptools import setup

setup(cffi_modules=["fakeproc/kernel/native/build.py:ffibuilder",
                     "fakeproc/fs/native/build.py:ffibuilder"])
