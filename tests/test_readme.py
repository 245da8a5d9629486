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
    from flowlab.cli import build_parser

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
