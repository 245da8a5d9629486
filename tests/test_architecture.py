"""The import contract of DESIGN.md ("One engine, many systems"), checked with import-linter.

The contracts live in setup.cfg ([importlinter] sections). The first test runs them on the package as
it is; the second shows that they bite: a copy of the package with one forbidden import injected
(a system importing the command line) must be reported as broken.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(cwd: Path, env_path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("import-linter is required in CI (the test extra installs it)")
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    env = dict(os.environ, PYTHONPATH=str(env_path))
    return subprocess.run([exe, "--no-cache", "setup.cfg"], check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_import_contracts_are_kept():
    res = _lint_imports(ROOT, ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_a_forbidden_import_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "flowlab", tmp_path / "flowlab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    victim = tmp_path / "flowlab" / "systems" / "ntp_order" / "model.py"
    victim.write_text(victim.read_text() + "\nfrom ...cli import main  # noqa: E402 (injected by the test)\n")
    res = _lint_imports(tmp_path, tmp_path)
    assert res.returncode != 0
    assert "BROKEN" in res.stdout and "flowlab.systems.ntp_order.model -> flowlab.cli" in res.stdout
