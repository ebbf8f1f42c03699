"""Packages: every ``ditmeter`` package (a new model family folder needs no entry here), and
``configs/`` shipped inside the package as ``ditmeter.conf`` (configs are data, not code), and the
measurement dataset ``data/measurements/`` as ``ditmeter.measurements`` (``ditmeter validate``)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["ditmeter", "ditmeter.*"]), "ditmeter.conf", "ditmeter.measurements"],
    package_dir={"ditmeter.conf": "configs", "ditmeter.measurements": "data/measurements"},
)
