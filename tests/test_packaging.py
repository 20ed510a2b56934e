"""The installed package works from anywhere, not just from the repository root.

analysis/ installs as mbrec.analysis: its modules must import each other as mbrec.analysis.X
(or relatively), never as a top-level `analysis` package, which does not exist once installed.
"""

import pkgutil
import subprocess
import sys
from importlib import resources

import mbrec.analysis


def import_in_clean_dir(tmp_path, code: str):
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True)


def test_every_analysis_module_imports_outside_the_repository(tmp_path):
    names = [m.name for m in pkgutil.iter_modules(mbrec.analysis.__path__)]
    code = "import importlib\n" + "".join(
        f"importlib.import_module('mbrec.analysis.{n}')\n" for n in names)
    result = import_in_clean_dir(tmp_path, code)
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1]


def test_no_module_imports_a_top_level_analysis_package():
    import pathlib
    root = pathlib.Path(__file__).resolve().parent.parent
    offenders = [str(p.relative_to(root)) for d in ("mbrec", "analysis")
                 for p in (root / d).rglob("*.py")
                 if any(line.startswith(("from analysis", "import analysis"))
                        for line in p.read_text().splitlines())]
    assert offenders == [], "use mbrec.analysis.X: " + ", ".join(offenders)


def test_bpf_sources_ship_as_package_data():
    files = {p.name for p in resources.files("mbrec.bpf").iterdir()}
    assert "mbrec_events.h" in files


def test_commands_that_inspect_traces_load_neither_bcc_nor_plots(tmp_path):
    code = ("import sys, mbrec.commands.info, mbrec.commands.replay\n"
            "bad = [m for m in ('bcc', 'matplotlib') if m in sys.modules]\n"
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    result = import_in_clean_dir(tmp_path, code)
    assert result.returncode == 0, result.stdout
