"""The command line, used as a person would: subprocesses, exit codes, JSON, files."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ref_energy, ref_entropy_rate, ref_unigram_loss
from flowlab.cli.args import parse_point
from flowlab.systems.markov.models import PRESETS


def run(*args, check_rc=0):
    proc = subprocess.run([sys.executable, "-m", "flowlab.cli.app", *args], capture_output=True, text=True, timeout=300,
                          check=False)
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def test_help_imports_no_heavy_module():
    code = (
        "import sys, contextlib, io\n"
        "from flowlab.cli.app import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "print(sorted(m for m in ('sympy', 'scipy', 'matplotlib', 'numpy', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("sub", ["derive", "eval", "flow", "critical", "basins", "plot", "demo"])
def test_subcommand_help_shows_defaults(sub):
    out = run(sub, "--help").stdout
    assert "usage: flowlab " + sub in out
    if sub in ("flow", "derive", "critical", "basins", "plot"):
        assert "(default:" in out
    if sub in ("critical", "basins", "plot"):
        assert "examples:\n  flowlab " + sub in out


def test_cli_offers_what_the_library_has():
    """Behaviour, not copied constants: every preset is named in the help and resolves; every flow method parses."""
    from flowlab.cli.app import build_parser
    from flowlab.cli.args import model_from_args
    from flowlab.systems.markov.flow import METHODS as FLOW_METHODS

    parser = build_parser()
    for method in FLOW_METHODS:
        args = parser.parse_args(["flow", "--p", "0.5", "--q", "0.8", "--at", "e=0.1,w=0.1", "--method", method])
        assert args.method == method
    help_text = run("eval", "--help").stdout
    for name, model in PRESETS.items():
        assert name in help_text
        args = parser.parse_args(["eval", "--model", name, "--p", "0.5", "--q", "0.8", "--at", "e=0.1"])
        assert model_from_args(args) is model


def test_eval_json():
    out = json.loads(run("eval", "--model", "ew", "--p", "0.5", "--q", "0.8", "--at", "e=0.3,w=-1.2", "--json").stdout)
    assert out["params"] == ["e", "w"]
    assert set(out["gradient"]) == {"e", "w"}
    assert np.array(out["hessian"]).shape == (2, 2)
    assert out["gap"] == pytest.approx(0.09 * (1 - 2 * 1.44))
    assert out["energy"] == pytest.approx(ref_energy(0.3, -1.2))
    assert ref_entropy_rate(0.5, 0.8)[0] < out["loss"]


def test_eval_on_the_unigram_line_and_text_output():
    out = json.loads(run("eval", "--p", "0.2", "--q", "0.3", "--at", "w=0.4,e=0", "--json").stdout)
    assert out["loss"] == pytest.approx(ref_unigram_loss(0.2, 0.3), rel=1e-12)
    text = run("eval", "--p", "0.2", "--q", "0.3", "--at", "e=0.5,w=0.4").stdout
    assert "loss" in text and "gradient" in text


def test_flow_json_and_trajectory_files(tmp_path):
    for ext in ("npz", "csv"):
        path = tmp_path / f"traj.{ext}"
        out = json.loads(run("flow", "--model", "ew", "--p", "0.5", "--q", "0.8", "--at", "e=0.1,w=0.1",
                             "--json", "--trajectory", str(path)).stdout)
        for key in ("final", "loss", "reached", "status", "message", "energy_drift"):
            assert key in out
        assert out["reached"] == "local" and out["status"] == "converged"
        assert out["loss"] == pytest.approx(ref_unigram_loss(0.5, 0.8), abs=1e-9)
        assert out["energy_drift"] < 1e-6
        if ext == "npz":
            with np.load(path, allow_pickle=False) as data:
                assert set(data.files) >= {"t", "e", "w", "loss", "E"}
                assert data["E"][0] == pytest.approx(ref_energy(0.1, 0.1))
        else:
            header = path.read_text().splitlines()[0]
            assert header == "t,e,w,loss,E"
    assert not list(tmp_path.glob(".*tmp"))


def test_flow_ewb_text():
    out = run("flow", "--model", "ewb", "--p", "0.5", "--q", "0.8", "--at", "e=1,w=-1.5,b=0").stdout
    assert "reached   global" in out


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["eval", "--p", "0", "--q", "0.5", "--at", "e=1,w=1"], "strictly between 0 and 1"),
        (["eval", "--p", "1.2", "--q", "0.5", "--at", "e=1,w=1"], "strictly between 0 and 1"),
        (["eval", "--p", "nan", "--q", "0.5", "--at", "e=1,w=1"], "must be finite"),
        (["flow", "--p", "0.3", "--q", "0.7", "--at", "e=1,w=1"], "p + q = 1"),
        (["eval", "--p", "0.3", "--q", "0.5", "--at", "e=1"], "missing: w"),
        (["eval", "--p", "0.3", "--q", "0.5", "--at", "e=1,w=1,a=2"], "unknown: a"),
        (["eval", "--p", "0.3", "--q", "0.5", "--at", "e=1;w=1"], "not a number: '1;w=1'"),
        (["eval", "--p", "0.3", "--q", "0.5", "--at", "e=1,,w=1"], "malformed point"),
        (["eval", "--p", "0.3", "--q", "0.5", "--at", "e=1,w=__import__('os')"], "not a number"),
        (["eval", "--p", "0.3", "--q", "0.5", "--at", "e=1,e=2"], "given twice"),
        (["eval", "--p", "0.3", "--q", "0.5", "--at", "e=inf,w=1"], "finite"),
        (["eval", "--model", "xyz", "--p", "0.3", "--q", "0.5", "--at", "e=1,w=1"], "invalid choice: 'xyz'"),
        (["derive", "--p", "0.3"], "both --p and --q"),
        (["flow", "--p", "0.3", "--q", "0.5", "--at", "e=1,w=1", "--t-max", "-1"], "t_max"),
    ],
)
def test_bad_input_gives_a_clear_error_and_exit_2(args, fragment, tmp_path):
    traj = tmp_path / "t.npz"
    extra = ["--trajectory", str(traj)] if args[0] == "flow" else []
    proc = run(*args, *extra, check_rc=2)
    assert fragment in proc.stderr
    assert proc.stdout == ""
    assert not traj.exists()


def test_parse_point():
    assert parse_point("e=0.3, w=-1.2") == {"e": 0.3, "w": -1.2}
    assert parse_point("e=1e-3,w=2") == {"e": 1e-3, "w": 2.0}


@pytest.mark.parametrize("fmt", ["latex", "markdown", "json"])
def test_derive_formats(fmt, tmp_path):
    out = tmp_path / f"d.{fmt}"
    run("derive", "--model", "ew", "--p", "0.5", "--q", "0.8", "--format", fmt, "--out", str(out))
    text = out.read_text()
    if fmt == "json":
        data = json.loads(text)
        assert all(i["verified"] for i in data["identities"])
        assert data["chain"]["entropy_rate"] == pytest.approx(ref_entropy_rate(0.5, 0.8)[0])
    elif fmt == "latex":
        assert text.startswith("\\documentclass") and text.rstrip().endswith("\\end{document}")
    else:
        assert "## At p = 0.5, q = 0.8" in text


def test_plot_refuses_bad_requests_before_any_work(tmp_path, capsys):
    from flowlab.cli.app import main

    for argv, what in (
        (["plot", "landscape", "--p", "0.1", "--q", "0.1", "--out", str(tmp_path / "f.jpg")], "extension"),
        (["plot", "flow3d", "--p", "0.1", "--q", "0.1", "--at", "e=1,w=1", "--out", str(tmp_path / "f.png")], "3-D"),
        (["plot", "landscape", "--model", "ewb", "--p", "0.1", "--q", "0.1", "--out", str(tmp_path / "f.png")], "plane"),
        (["plot", "trajectories", "--p", "0.1", "--q", "0.1", "--out", str(tmp_path / "f.png")], "--at"),
        (["plot", "loss", "--p", "0.1", "--q", "0.1", "--at", "e=1,x=2", "--out", str(tmp_path / "f.png")], "unknown"),
    ):
        assert main(argv) == 2, argv
        assert what in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_plot_writes_each_format(tmp_path):
    from flowlab.cli.app import main

    for ext, magic in ((".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")):
        out = tmp_path / f"loss{ext}"
        assert main(["plot", "loss", "--p", "0.5", "--q", "0.8", "--at", "e=0.02,w=0.01", "--at", "e=1,w=-1.5",
                     "--t-max", "200", "--out", str(out)]) == 0
        assert out.read_bytes()[:len(magic)] == magic
