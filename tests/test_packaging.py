"""Hydra finds its configs from a built wheel, not only from the source checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_configs_and_runs_report(tmp_path: Path) -> None:
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheel_dir),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = wheel_dir.glob("ditmeter-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ditmeter/conf/config.yaml" in names and "ditmeter/py.typed" in names
    assert "ditmeter/conf/workload/720p-81f.yaml" in names
    assert "ditmeter/conf/host/epyc-9654.yaml" in names
    assert "ditmeter/measurements/wan2.1-readme.yaml" in names  # ditmeter validate's dataset
    zipfile.ZipFile(wheel).extractall(site)
    out = tmp_path / "runs"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import ditmeter, ditmeter.config as c;"
        "assert ditmeter.__file__.startswith(sys.argv[1]), ditmeter.__file__;"
        "assert str(c.config_dir()).startswith(sys.argv[1]);"
        "from ditmeter.commands.validate import default_folder as f;"
        "assert str(f()).startswith(sys.argv[1]) and len(list(f().glob('*.yaml'))) >= 3, f();"
        "from ditmeter.cli import main;"
        "sys.exit(main(['report', 'workload=w001-tiny', 'output_root=' + sys.argv[2]]))"
    )
    subprocess.run([sys.executable, "-c", code, str(site), str(out)], check=True, cwd=tmp_path)
    assert len(list(out.iterdir())) == 1
