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


#: (file to inject into, the injected line, the contract that must report it, the import it names)
INJECTIONS = [
    ("systems/ntp_order/model.py", "from flowlab.cli import main", "Layers", "flowlab.systems.ntp_order.model -> flowlab.cli"),
    ("engine/batch.py", "from flowlab.systems.markov import chain", "Layers",
     "flowlab.engine.batch -> flowlab.systems.markov.chain"),
    ("symbolic/special.py", "from flowlab.plots import markov", "Layers", "flowlab.symbolic.special -> flowlab.plots.markov"),
    ("systems/cooccurrence/gram.py", "from flowlab.systems.markov import chain", "No system imports another",
     "flowlab.systems.cooccurrence.gram -> flowlab.systems.markov.chain"),
    ("engine/fit.py", "import sympy", "The engine imports no SymPy", "flowlab.engine.fit -> sympy"),
    ("plots/cooccurrence.py", "from flowlab.systems.markov import landscape", "Plots take results",
     "flowlab.plots.cooccurrence -> flowlab.systems.markov.landscape"),
    ("engine/fit.py", "from flowlab.engine import batch", "No import cycles", ".fit -> .batch"),
]


@pytest.mark.parametrize(("victim", "line", "contract", "named"), INJECTIONS, ids=[i[3] for i in INJECTIONS])
def test_a_forbidden_import_breaks_the_contract(tmp_path, victim, line, contract, named):
    shutil.copytree(ROOT / "flowlab", tmp_path / "flowlab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    path = tmp_path / "flowlab" / victim
    path.write_text(path.read_text() + f"\n{line}  # noqa: E402 (injected by the test)\n")
    if "cycles" in contract:  # a cycle needs the way back too: batch imports fit
        back = tmp_path / "flowlab" / "engine" / "batch.py"
        back.write_text(back.read_text() + "\nfrom flowlab.engine import fit  # noqa: E402 (injected)\n")
    res = _lint_imports(tmp_path, tmp_path)
    assert res.returncode != 0
    broken = [ln for ln in res.stdout.splitlines() if ln.endswith("BROKEN") or " BROKEN (" in ln]  # "(n ignored imports)"
    assert any(ln.startswith(contract) for ln in broken), res.stdout[-3000:]
    assert named in res.stdout, res.stdout[-3000:]


MAX_FUNCTION_LINES = 80


def test_no_function_is_longer_than_80_lines_without_a_reason():
    """Issue 12: a function over 80 lines (def line to last line) says why in a docstring line 'Long: ...'."""
    import ast

    offenders = []
    for path in sorted((ROOT / "flowlab").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                if length > MAX_FUNCTION_LINES and not any(ln.strip().startswith("Long: ") for ln in doc.splitlines()):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not offenders, "functions over 80 lines without a 'Long: reason' docstring line:\n" + "\n".join(offenders)
