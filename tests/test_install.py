"""A clean install of the project says nothing alarming (issue 11): the build log of an
editable install and of a wheel, made from a throwaway copy of the source tree into a
throwaway prefix, has no setuptools warning, and the wheel carries every package and the
data files (``ailand/data``: parameter and site tables, anemoi recipe, shipped emulator)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".venv", "runs", ".git", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache",
                                "*.tmp", "*.pyc")
# none tolerated: with package-dir {"" = "."} setuptools uses a plain .pth and prints no
# "Editable installation" notice either
KNOWN = ()
WARNING = re.compile(r"\w*Warning\b|^\s*!!\s*$|is absent from the `packages`|package_data", re.M)


def _warnings(log: str) -> list[str]:
    return [line.strip() for line in log.splitlines() if WARNING.search(line) and not any(k in line for k in KNOWN)
            and line.strip() != "!!"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    if shutil.which("git") is None and not (ROOT / "pyproject.toml").exists():
        pytest.skip("no source tree")
    src = tmp_path_factory.mktemp("install") / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=IGNORE)
    return src


def _pip(src: Path, *args) -> str:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    r = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "PIP_NO_INDEX": "1", "HOME": str(src.parent)})
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    return log


def test_editable_install_prints_no_setuptools_warning(source, tmp_path):
    # --ignore-installed: into the throwaway prefix only; without it pip first uninstalls the
    # project's own editable install from the running environment
    log = _pip(source, "install", "-v", "--no-deps", "--no-build-isolation", "--no-warn-script-location", "--ignore-installed",
               "-e", ".", "--prefix", str(tmp_path / "prefix"))
    assert "Successfully installed ailand" in log
    assert "uninstall" not in log.lower(), "the test install touched the running environment's ailand"
    assert _warnings(log) == [], "\n".join(_warnings(log))


def test_wheel_has_every_package_and_the_data_files(source, tmp_path):
    log = _pip(source, "wheel", "-v", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), ".")
    assert _warnings(log) == [], "\n".join(_warnings(log))
    (whl,) = tmp_path.glob("ailand-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for data in ("ailand/data/parameters.csv", "ailand/data/sites.csv", "ailand/data/anemoi/ensemble.yaml",
                 "ailand/data/emulator/default.pt"):
        assert data in names, data
    # every package of the source tree is in the wheel, found without listing (new ones too)
    for init in ROOT.glob("*/**/__init__.py"):
        rel = init.relative_to(ROOT).as_posix()
        if rel.split("/")[0] in ("ailand", "calibration", "sensitivity"):
            assert rel in names, f"{rel} is missing from the wheel"
    assert "calibration/ensemble_kalman/__init__.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "examples/", "data/")) for n in names)


def test_the_warning_filter_catches_the_old_configuration_warning():
    old = ("  /x/setuptools/command/build_py.py:215: BuildBackendWarning: Package 'ailand.data.emulator' is absent "
           "from the `packages` configuration.\n  !!\n")
    assert len(_warnings(old)) == 1
    assert len(_warnings("  x.py:354: BuildBackendWarning: Editable installation.\n  !!\n")) >= 1
