from setuptools import setup

import re

version = re.search(r'__version__ = "([^"]+)"', open("mbrec/__init__.py").read()).group(1)

setup(
    name="mbrec",
    version=version,
    description="Record kernel TCP/IP events on every host; split each request's latency "
                "into sender stack, wire, receiver stack and application",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # analysis/ and bpf/ live at the top of the repository but install inside the package.
    packages=["mbrec", "mbrec.commands", "mbrec.trace", "mbrec.lab", "mbrec.analysis",
              "mbrec.bpf", "mbrec.recorder", "mbrec.fleet", "mbrec.testing"],
    package_dir={"mbrec": "mbrec", "mbrec.analysis": "analysis", "mbrec.bpf": "bpf"},
    package_data={"mbrec.bpf": ["*.c", "*.h"], "mbrec.lab": ["*.sh", "scenarios/*"]},
    # perfetto: Perfetto's own trace protos for `mbrec export`; plotly: the plotting library
    # report.html embeds (its plotly.js ships in the package, so the page needs no network)
    # numba: the analysis' compiled kernels (analysis/kernels.py), one hashed pass where numpy
    # needed sorts and gathers (layer links 0.41 -> 0.19 s, flow ids 0.32 -> 0.17 s of CPU on
    # bench/analyze.py's 1.9 M-event trace)
    install_requires=["msgpack>=1.0", "zstandard>=0.19", "click>=8.0", "numpy>=1.24",
                      "matplotlib>=3.6", "tqdm>=4.60", "perfetto>=0.59", "plotly>=5.0", "numba>=0.59"],
    # dask: `mbrec analyze --scheduler` on a Dask cluster (the tests start a LocalCluster);
    # selenium drives Debian's chromium + chromium-driver for the report.html browser test;
    # ruff and mypy: `make lint`
    extras_require={"dask": ["distributed>=2024.1"],
                    "test": ["pytest", "hypothesis", "scipy", "distributed>=2024.1",
                             "selenium>=4.10", "ruff", "mypy"]},
    entry_points={"console_scripts": ["mbrec = mbrec.cli:main"]},
)
