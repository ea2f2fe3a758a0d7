"""The Makefile's set-up as a newcomer runs it: a Python other than 3.11 refused at once, naming
PYTHON=; python3.11 preferred to a python3 of another version; a .venv of another Python made
anew. Other Pythons are stood in for by scripts that print their version (a machine need not
have a 3.12)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def make(*args: str, path: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTHON", None)
    env.pop("MAKEFLAGS", None)
    if path is not None:  # only the Pythons the test puts there
        env["PATH"] = str(path)
    return subprocess.run(
        [MAKE, "--no-print-directory", "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def fake_python(folder: Path, name: str, version: str) -> None:
    """A "python" that answers check-python's question (its major.minor) as `version` would."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / name
    script.write_text(f"#!/bin/sh\necho {version}\n")
    script.chmod(0o755)


def test_a_python_other_than_3_11_is_refused_at_once_naming_python(tmp_path):
    # python3 3.12 spent a minute in pip, then: requires a different Python: 3.12.1 not in ...
    fake_python(tmp_path / "bin", "python3", "3.12")
    out = make("check-python", path=tmp_path / "bin")
    assert out.returncode != 0
    assert "error: python3 is Python 3.12; crossgrad needs 3.11" in out.stderr, out.stderr
    assert "make PYTHON=python3.11" in out.stderr
    out = make("check-python", "PYTHON=no-such-python")
    assert out.returncode != 0
    assert "error: cannot run no-such-python: crossgrad needs Python 3.11" in out.stderr, out.stderr


def test_python3_11_is_taken_before_a_python3_of_another_version(tmp_path):
    fake_python(tmp_path / "bin", "python3", "3.12")
    (tmp_path / "bin" / "python3.11").symlink_to(sys.executable)  # this test's own 3.11
    out = make("check-python", path=tmp_path / "bin")
    assert out.returncode == 0, out.stderr


def test_a_venv_of_another_python_is_made_anew(tmp_path):
    # `python3.11 -m venv` over a python3.12 .venv kept it, and the set-up failed again
    venv = tmp_path / "venv"
    fake_python(venv / "bin", "python", "3.12")
    (venv / "lib" / "python3.12").mkdir(parents=True)
    out = make("venv", f"VENV={venv}", f"PYTHON={sys.executable}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "holds another Python than 3.11: making it anew" in out.stdout
    assert not (venv / "lib" / "python3.12").exists()
    version = subprocess.run(
        [venv / "bin" / "python", "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == "(3, 11)"
