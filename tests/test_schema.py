"""One vocabulary for every JSON payload (issue 12), checked on every command path with ``--json``.

Each command runs in this process on small, fast settings; its stdout is parsed (NaN/Infinity
refused) and checked against the rules of docs/schema.md: ``status`` and ``message`` at the top
level, no synonym of a vocabulary word anywhere in the key tree, ``complete`` always a bool,
every ``counts`` object with a ``total`` equal to the sum of the other counts, and every top-level
key documented in the payload's section of docs/schema.md.
"""

import contextlib
import importlib.util
import io
import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "docs" / "schema.md"

#: Keys that must not appear anywhere in a payload (the vocabulary word in parentheses).
FORBIDDEN = {
    "wall_time_s": "seconds", "total_s": "seconds", "timings": "seconds / seconds_by_phase", "elapsed": "seconds",
    "phase_seconds": "seconds_by_phase", "at": "initial / point", "start": "initial", "initial_point": "initial",
    "theta0": "initial", "sgd_ended": "reached", "ended": "reached", "bigram_loss": "optimal_loss",
    "loss_final": "final_loss", "loss_initial": "initial_loss", "messages": "message per region",
}
#: Facts of the chain that appear only inside a ``chain`` object.
CHAIN_ONLY = {"entropy_rate", "unigram_loss"}

# ------------------------------------------------------------------ the checks


def _reject_constant(name):
    raise ValueError(f"{name} in a JSON payload (the vocabulary says null)")


def parse(text: str):
    """JSON text -> object; NaN, Infinity and -Infinity are refused."""
    return json.loads(text, parse_constant=_reject_constant)


def _walk(obj, path=()):
    """(path, key, value) for every key of every object in ``obj``, depth first."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield path, key, value
            yield from _walk(value, path + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _walk(value, path + (i,))


def vocabulary_errors(payload, *, top_level: bool = True) -> list[str]:
    """Every breach of the vocabulary in ``payload`` (an empty list when it follows it)."""
    errors = []
    if top_level:
        for key in ("status", "message"):
            if not isinstance(payload.get(key), str):
                errors.append(f"top level: no string {key!r}")
    for path, key, value in _walk(payload):
        where = "/".join(map(str, path + (key,)))
        if path[-2:-1] == ("derivations",):  # the demo's {model: {identity name: verified}}: names, not words
            continue
        if key in FORBIDDEN:
            errors.append(f"{where}: say {FORBIDDEN[key]!r}, not {key!r}")
        if key in CHAIN_ONLY and (not path or path[-1] != "chain"):
            errors.append(f"{where}: {key!r} belongs inside a 'chain' object (optimal_loss / levels at this level)")
        if key == "complete" and not isinstance(value, bool):
            errors.append(f"{where}: 'complete' must be a bool, got {type(value).__name__}")
        if key == "counts" and isinstance(value, dict):
            others = {k: v for k, v in value.items() if k != "total"}
            if "total" not in value:
                errors.append(f"{where}: no 'total'")
            elif not all(isinstance(v, int) for v in value.values()) or value["total"] != sum(others.values()):
                errors.append(f"{where}: 'total' {value['total']!r} is not the sum of {others}")
        if isinstance(value, float) and not math.isfinite(value):
            errors.append(f"{where}: non-finite number")
    return errors


def documented_keys() -> dict[str, set[str]]:
    """{section id: keys in the first column of its tables} from docs/schema.md (``## id: title`` headings)."""
    sections = {}
    for block in re.split(r"^## ", SCHEMA.read_text(), flags=re.M)[1:]:
        ident = block.split(":", 1)[0].strip()
        cells = [line.split("|")[1] for line in block.splitlines() if line.startswith("| `")]
        sections[ident] = {key for cell in cells for key in re.findall(r"`([^`]+)`", cell)}
    return sections


# ------------------------------------------------------------------ the commands


def run(argv) -> tuple[int, str, str]:
    """``flowlab ARGV`` in this process: (exit code, stdout, stderr)."""
    from flowlab.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


EW = ["--model", "ew", "--p", "0.5", "--q", "0.8"]
KERNEL = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]]
#: section id of docs/schema.md -> argv ({data} and {kernel}: files the fixture writes).
COMMANDS = {
    "derive": ["derive", "--model", "ew", "--format", "json"],
    "eval": ["eval", *EW, "--at", "e=0.3,w=-1.2", "--json"],
    "eval-kstate": ["eval", "--kernel", "{kernel}", "--logits", "u; v; 0", "--params", "u,v", "--at", "u=0.1,v=0.2",
                    "--json"],
    "flow": ["flow", *EW, "--at", "e=0.1,w=0.1", "--json", "--quiet"],
    "critical": ["critical", *EW, "--samples", "4", "--json"],
    "critical-regions": ["critical", "--model", "ew", "--regions", "--samples", "4", "--json"],
    "basins": ["basins", *EW, "--grid", "9", "--json", "--quiet"],
    "basins-gaussian": ["basins", *EW, "--gaussian", "0.02", "--samples", "20", "--seed", "0", "--json", "--quiet"],
    "chain": ["chain", "--p", "0.5", "--q", "0.8", "--json"],
    "chain-kstate": ["chain", "--kernel", "{kernel}", "--json"],
    "train": ["train", "--steps", "40", "--json", "--quiet"],
    # --layer-norm: no canonical counterpart, so no ewab flow for the prediction (same keys, a few seconds)
    "train-transformer": ["train", "--model", "transformer", "--steps", "3", "--eval-sequences", "64",
                          "--layer-norm", "--json", "--quiet"],
    "train-table": ["train", "--table", "--steps", "20", "--json", "--quiet"],
    "guide": ["guide", "--grid", "21", "--json", "--quiet"],
    "cooccurrence-claims": ["cooccurrence", "claims", "--engine", "reduced", "--t-max", "20", "--points", "60",
                            "--json", "--quiet"],
    "cooccurrence-compare": ["cooccurrence", "compare", "--m", "4", "--m1", "4", "--json", "--quiet"],
    "cooccurrence-scaling": ["cooccurrence", "scaling", "--m", "8", "16", "--json", "--quiet"],
    "ntp-order-targets": ["ntp-order", "targets", "--data", "{data}", "--json"],
    "ntp-order-run": ["ntp-order", "run", "--data", "{data}", "--steps1", "100", "--steps2", "200", "--json",
                      "--quiet"],
    "cache-info": ["cache", "info", "--json"],
    "cache-clear": ["cache", "clear", "--json"],
    "sweep": ["sweep", "markov", "--p", "0.2,0.5", "--q", "0.5", "--starts", "5", "--workers", "1", "--no-processes",
              "--out", "{sweep}", "--json"],
    "sweep-cooccurrence": ["sweep", "cooccurrence", "--m", "16,64", "--L", "3", "--n", "12", "--d", "24", "--m1",
                           "32", "--workers", "1", "--no-processes", "--out", "{sweep}-cooc", "--json"],
    "sweep-ntp-order": ["sweep", "ntp_order", "--vocab", "6", "--sentences", "24", "--steps1", "30", "--steps2",
                        "60", "--workers", "1", "--no-processes", "--out", "{sweep}-ntp", "--json"],
}
NEEDS = {"train-transformer": "torch", "ntp-order-targets": "cvxpy", "ntp-order-run": "cvxpy", "sweep": "distributed",
         "sweep-cooccurrence": "distributed", "sweep-ntp-order": "distributed"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schema")
    kernel = folder / "kernel.json"
    kernel.write_text(json.dumps(KERNEL))
    data = folder / "data.json"
    code, _, err = run(["ntp-order", "data", "--vocab", "6", "--sentences", "24", "--seed", "1", "--out", str(data)])
    assert code == 0, err
    return {"kernel": str(kernel), "data": str(data), "sweep": str(folder / "sweep.zarr")}


@pytest.fixture(scope="module")
def payloads():
    """Each command's payload, computed once for the module (section id -> parsed JSON)."""
    return {}


def payload(name, files, payloads):
    if name not in payloads:
        if NEEDS.get(name) and importlib.util.find_spec(NEEDS[name]) is None:
            pytest.skip(f"needs {NEEDS[name]}")
        argv = [a.format(**files) for a in COMMANDS[name]]
        code, out, err = run(argv)
        assert code in (0, 1) and out.strip(), (argv, code, err)  # 1: a finding (e.g. not confirmed)
        payloads[name] = parse(out)
    return payloads[name]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_payload_follows_the_vocabulary(name, files, payloads):
    errors = vocabulary_errors(payload(name, files, payloads))
    assert not errors, f"flowlab {' '.join(COMMANDS[name])}:\n  " + "\n  ".join(errors)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_top_level_key_is_documented(name, files, payloads):
    sections = documented_keys()
    assert name in sections, f"docs/schema.md has no section '## {name}: ...'"
    missing = set(payload(name, files, payloads)) - sections[name]
    assert not missing, f"keys of `flowlab {' '.join(COMMANDS[name])}` missing from docs/schema.md ## {name}: " \
                        f"{sorted(missing)}"


def test_written_dataset_is_documented(files):
    """The dataset file of `ntp-order data` is an input format (no status): its keys are documented."""
    keys = set(parse(Path(files["data"]).read_text()))
    assert keys <= documented_keys()["ntp-order-data"]


def test_the_checks_catch_each_breach():
    """Each rule fires on a payload that breaks it (and only on the offending key)."""
    good = {"status": "ok", "message": "", "chain": {"entropy_rate": 0.6, "unigram_loss": 0.69},
            "complete": True, "counts": {"global": 2, "local": 1, "total": 3}, "levels": {"unigram": 0.69},
            "derivations": {"ew": {"unigram_loss": True}}}
    assert vocabulary_errors(good) == []
    bad = {
        "message": "x", "timings": {"total_s": 1.0}, "runs": [{"at": {"e": 1.0}, "sgd_ended": "local"}],
        "unigram_loss": 0.69, "complete": {"a": True}, "counts": {"global": 2, "local": 1},
        "inner": {"counts": {"a": 1, "total": 2}}, "x": float("nan"),
    }
    errors = "\n".join(vocabulary_errors(bad))
    for word in ("'status'", "timings", "total_s", "runs/0/at", "sgd_ended", "unigram_loss", "'complete' must",
                 "counts: no 'total'", "inner/counts", "x: non-finite"):
        assert word in errors, (word, errors)
    assert len(vocabulary_errors(bad)) == 10
    with pytest.raises(ValueError, match="NaN"):
        parse('{"a": NaN}')


def test_every_section_is_used():
    """docs/schema.md documents the payloads this test runs (plus the library's written files), no stale one."""
    written = {"ntp-order-data", "demo-summary", "figure4-summary", "cooccurrence-summary", "ntp-order-summary",
               "demo-sweep-summary"}
    assert set(documented_keys()) == set(COMMANDS) | written
