"""The README stays in step with the code: every command, example and derivation file is documented."""

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_every_command_is_in_the_readme():
    from flowlab.cli.app import build_parser

    missing = []
    for name, sub in _subcommands(build_parser()).items():
        nested = _subcommands(sub)
        for full in [f"flowlab {name} {n}" for n in nested] or [f"flowlab {name}"]:
            if not re.search(re.escape(full) + r"\b", README):
                missing.append(full)
    assert not missing, f"commands missing from README.md: {missing}"


def test_every_example_is_in_the_readme():
    missing = [p.name for p in sorted((ROOT / "examples").glob("*.py")) if p.name not in README]
    assert not missing, f"examples missing from README.md: {missing}"


def test_every_derivation_file_is_in_the_readme():
    missing = [p.name for p in sorted((ROOT / "derivations").glob("*.md")) if p.name not in README]
    assert not missing, f"derivation files missing from README.md: {missing}"


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def test_the_public_api_is_exactly_what_the_readme_lists():
    import flowlab

    table = [ln for ln in _section("Python API").splitlines() if ln.startswith("| ") and "`" in ln]
    listed = {name for ln in table for name in re.findall(r"`([A-Za-z_]+)`", ln.split("|")[2])}
    assert listed == set(flowlab.__all__) - {"__version__"}
    for name in listed:
        assert getattr(flowlab, name) is not None


def test_the_readme_api_examples_run(tmp_path, monkeypatch):
    """Both code blocks of "Python API" run as written (in a temporary folder: one writes basins-out)."""
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", _section("Python API"), re.S)
    assert len(blocks) == 2
    for block in blocks:
        namespace = {}
        exec(compile(block, "README.md", "exec"), namespace)  # our own README, not user text
    assert namespace["flowlab"].flow(namespace["Bowl"](), [1.0, -2.0]).reached == "global"
    assert (tmp_path / "basins-out" / "basins.json").exists()


def test_the_architecture_section_names_every_module():
    text = _section("Architecture")
    missing = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "flowlab").rglob("*.py"))
               if p.name != "__init__.py" and p.name not in text]
    assert not missing, f"modules missing from the README's architecture section: {missing}"
