"""Hostile invocations of the command line (issue 11, item 13).

Every invocation here is wrong on purpose: out-of-range, non-finite, malformed or huge numbers,
unwritable or mistyped output paths, broken input files, logits that try to run code. Each must
end with exit code 2 (invalid input) and exactly one line on stderr naming the problem, no
traceback, no Python warning, nothing on stdout, and no file left in the output location. They
run in-process through ``flowlab.cli.app.main`` (fast); only signals and the few invocations that
would ask for unbounded work (item 11) run in subprocesses, under a memory cap and a timeout.

Also here: the last-resort handler (exit 1), Ctrl-C (exit 130, nothing half-written), umask,
and the atomic result folders of ``basins`` and ``demo``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli_vocabulary import walk_commands

from flowlab.cli.app import main

#: A valid chain (p + q < 1), so that the argument under test is the only thing wrong.
PQ = ["--p", "0.2", "--q", "0.3"]
#: A switching probability must be a finite number strictly inside (0, 1).
BAD_PROBABILITIES = ["0", "1", "-0.5", "1.5", "nan", "-nan", "inf", "-inf", "1e400", "1e-400", "", "abc", "0,5",
                     "1/2", "0.5.5", "0x1p-1", "½", "2e0"]
#: Numbers that no positive-integer argument accepts.
BAD_COUNTS = ["0", "-1", "1.5", "", "abc", "1e3", "nan", "inf", "0x10", "1,000", "9" * 5000]
#: Numbers that no finite-float argument accepts.
NON_FINITE = ["nan", "inf", "-inf", "1e400", "", "abc", "1,5", "--1"]
BAD_SEEDS = ["-1", str(2**32), str(2**64), "1.5", "", "abc", "1e3", "nan"]
#: Points for --at: wrong separators, missing or unknown names, non-finite values, code.
BAD_POINTS = ["", "e=1", "e=1,w=1,a=2", "e=1;w=1", "e:1,w:1", "e=1 w=1", "e=1,,w=1", "=1,w=1", "e=,w=1",
              "e=1,e=2", "e=nan,w=1", "e=inf,w=1", "e=1e400,w=0", "e=0x1p3,w=1", "e=__import__('os'),w=1",
              "e=(lambda: 1)(),w=1", "e=w.__class__,w=1", "E=1,W=1", "e=1,w=1,", "e=1/2,w=1"]
#: Ranges for --range/--box: reversed, zero-width, non-finite, malformed, unknown or repeated names.
BAD_RANGES = [["e:3:-3"], ["e:1:1"], ["e:nan:1"], ["e:-inf:inf"], ["e:-1e400:1"], ["e:-1:1:2"], ["e-1:1"],
              ["e:-1,1"], [":-1:1"], ["e::1"], ["e:a:b"], ["z:-1:1"], ["e:-1:1", "e:-2:2"], ["e:0x1:2"]]
#: Logits that are not expressions of the allowed grammar, or try to run code, or are too big.
BAD_LOGITS = [
    "", " ", "__import__('os').system('true')", "e.__class__", "(lambda: e)()", "e**2*x; import os",
    "eval('e')", "open('f')", "getattr(e, 'x')", "().__class__", "[e]", "{e: 1}", "e @ x", "e if x else w",
    "e\u00b2*x", "e*x*", "foo(e)*x", "Abs(e, w)*x", "(" * 1000 + "e" + ")" * 1000, "e" + "+e" * 5000,
    "9**9**9**9", "1e99999*e", "e*x" + "0" * 500, "1/0*e", "exp(" * 40 + "e" + ")" * 40, "e\x00*x", "'e'",
    "e == x", "e*x # comment", "sympify('e')",
]
#: Kernel files for --kernel: (name, content).
KERNEL_FILES = {
    "empty.json": "",
    "empty.csv": "",
    "notjson.json": "[[0.5, 0.5], [0.5",
    "nonsquare.json": "[[0.5, 0.5], [0.5, 0.25, 0.25]]",
    "nonsquare2.json": "[[0.5, 0.5, 0.0], [0.5, 0.25, 0.25]]",
    "nan.json": "[[NaN, 0.5], [0.5, 0.5]]",
    "nan.csv": "nan,0.5\n0.5,0.5\n",
    "inf.json": "[[Infinity, 0.5], [0.5, 0.5]]",
    "negative.json": "[[1.5, -0.5], [0.5, 0.5]]",
    "rowsum.json": "[[0.5, 0.6], [0.5, 0.5]]",
    "bigint.json": "[[" + "1" * 400 + ", 0], [0.5, 0.5]]",
    "object.json": '{"matrix": [[0.5, 0.5], [0.5, 0.5]]}',
    "strings.json": '[["0.5", "0.5"], ["0.5", "0.5"]]',
    "nested.json": "[" * 100000 + "]" * 100000,
    "scalar.json": "0.5",
    "one.json": "[[1.0]]",
    "header.csv": "a,b\n0.5,0.5\n0.5,0.5\n",
    "reducible.json": "[[1.0, 0.0], [0.0, 1.0]]",
    "huge.json": "[[0.5, 0.5], [0.5, 0.5]]" + " " * (64 * 2**20),
    "binary.csv": "\x00\xff\xfe",
    "kernel.txt": "[[0.5, 0.5], [0.5, 0.5]]",
}


#: Invocations that other work in progress fixes (issue 11): expected to fail until it lands.
PENDING: dict[str, str] = {}  # tag -> reason, for cases expected to fail (strictly) until a fix lands


def _param(argv, tag):
    """A test case; the PENDING ones are expected to fail (strictly) until that work lands."""
    marks = [pytest.mark.xfail(strict=True, reason=PENDING[tag])] if tag in PENDING else []
    return pytest.param(list(argv), id=tag, marks=marks)


def _cases():
    """(argv, id) of every hostile invocation run in-process; IN/ and OUT/ are replaced by folders."""
    cases = []

    def add(argv, tag):
        cases.append(_param(argv, tag))

    commands_with_pq = {
        "chain": [], "derive": [], "eval": ["--at", "e=1,w=1"], "flow": ["--at", "e=1,w=1"],
        "critical": [], "basins": ["--grid", "8"], "plot": ["landscape", "--out", "OUT/f.png"],
        "guide": [], "train": [],
    }
    for cmd, rest in commands_with_pq.items():
        head = [cmd] + rest[:1] if cmd == "plot" else [cmd]
        tail = rest[1:] if cmd == "plot" else rest
        for bad in BAD_PROBABILITIES:
            add(head + ["--p", bad, "--q", "0.3"] + tail, f"{cmd}-p={bad[:12]!r}")
        for bad in ("0", "1", "nan", "", "-1"):
            add(head + ["--p", "0.3", "--q", bad] + tail, f"{cmd}-q={bad!r}")
        if cmd not in ("guide", "train"):
            add(head + ["--p", "0.3"] + tail, f"{cmd}-q-missing")
    for cmd in ("flow", "basins", "plot"):  # p + q = 1 has no global/unigram distinction
        head = ["plot", "basins", "--out", "OUT/f.png"] if cmd == "plot" else [cmd]
        add(head + ["--p", "0.3", "--q", "0.7"] + (["--at", "e=1,w=1"] if cmd == "flow" else []), f"{cmd}-iid")

    # ------------------------------------------------------------------ models and logits
    for cmd, rest in (("derive", []), ("eval", PQ + ["--at", "e=1,w=1"]), ("flow", PQ + ["--at", "e=1,w=1"]),
                      ("critical", PQ), ("basins", PQ + ["--grid", "8"])):
        add([cmd, "--model", "xyz"] + rest, f"{cmd}-model-unknown")
        add([cmd, "--model", ""] + rest, f"{cmd}-model-empty")
        add([cmd, "--model", "ew", "--logit", "e*x", "--params", "e"] + rest, f"{cmd}-model-and-logit")
        add([cmd, "--params", "e,w"] + rest, f"{cmd}-params-without-logit")
        add([cmd, "--free-bias"] + rest, f"{cmd}-free-bias-without-logit")
        add([cmd, "--logit", "e*x"] + rest, f"{cmd}-logit-without-params")
    for i, logit in enumerate(BAD_LOGITS):
        add(["eval", "--logit", logit, "--params", "e,w", *PQ, "--at", "e=1,w=1"], f"eval-logit-{i}")
    for i, logit in enumerate(BAD_LOGITS[:12]):
        add(["derive", "--logit", logit, "--params", "e,w"], f"derive-logit-{i}")
    for params in ("", "e,e", "e w", "1e,w", "e,w,", "x,w", "m,w", "e.w", "__class__,w", "p,w", "q,w",
                   "sigmoid,w", "softplus,w", "profiled_logit0,w", "exp,w", "pi,w", "E,w", "e" * 40 + ",w",
                   ",".join(f"u{i}" for i in range(200))):
        add(["eval", "--logit", "e*x", "--params", params, *PQ, "--at", "e=1,w=1"], f"eval-params={params[:15]!r}")
    # logits that are undefined or non-finite at the point: an error naming the point (item 5)
    for logit, at in (("log(u)*x", "u=-1"), ("sqrt(u)*x", "u=-1"), ("u/v*x", "u=1,v=0"), ("exp(exp(u))*x", "u=10"),
                      ("Piecewise((u, u > 5))*x", "u=1"), ("u/x", "u=1"), ("log(u)*x", "u=0")):
        names = ",".join(sorted({n for n in ("u", "v") if n in logit}))
        add(["eval", "--logit", logit, "--params", names, *PQ, "--at", at], f"eval-nan-{logit}")
        add(["eval", "--logit", logit, "--params", names, *PQ, "--at", at, "--json"], f"eval-nan-json-{logit}")

    # ---------------------------------------------------------------------------- points
    for i, point in enumerate(BAD_POINTS):
        add(["eval", *PQ, "--at", point], f"eval-at-{i}")
        add(["flow", *PQ, "--at", point], f"flow-at-{i}")
    for i, point in enumerate(BAD_POINTS[:8]):
        add(["plot", "trajectories", *PQ, "--at", point, "--out", "OUT/f.png"], f"plot-at-{i}")
        add(["train", "--at", point], f"train-at-{i}")
    add(["plot", "trajectories", *PQ, "--out", "OUT/f.png"], "plot-trajectories-without-at")
    add(["train", "--init", "standard", "--at", "e=1,w=1"], "train-init-and-at")
    add(["train", "--init", "rank-one"], "train-rank-one-for-ewb")
    add(["train", "--model", "transformer", "--init", "rank-one"], "train-rank-one-without-at")
    add(["train", "--model", "transformer", "--init", "rank-one", "--at", "e=1,z=1"], "train-rank-one-unknown")
    add(["train", "--model", "transformer", "--at", "e=1,w=1"], "train-at-without-rank-one")

    # --------------------------------------------------------------------------- numbers
    for name in ("--t-max", "--grad-tol", "--rtol", "--atol"):
        for bad in NON_FINITE + ["-1"]:
            add(["flow", *PQ, "--at", "e=1,w=1", name, bad], f"flow{name}={bad!r}")
    add(["flow", *PQ, "--at", "e=1,w=1", "--t-max", "0"], "flow-t-max=0")
    for bad in ("0", "-1", "abc", "", "1.5"):
        add(["flow", *PQ, "--at", "e=1,w=1", "--max-steps", bad], f"flow-max-steps={bad!r}")
    for bad in ("0", "-1", "nan", "inf", ""):
        add(["flow", *PQ, "--at", "e=1,w=1", "--max-seconds", bad], f"flow-max-seconds={bad!r}")
    add(["flow", *PQ, "--at", "e=1,w=1", "--method", "euler"], "flow-method-unknown")
    for bad in BAD_COUNTS:
        add(["eval", *PQ, "--at", "e=1,w=1", "--context", bad], f"eval-context={bad[:12]!r}")
        add(["basins", *PQ, "--grid", bad], f"basins-grid={bad[:12]!r}")
    for name in ("--samples", "--chunk"):
        for bad in BAD_COUNTS[:6]:
            add(["basins", *PQ, "--gaussian", "0.02", name, bad], f"basins{name}={bad!r}")
    for bad in NON_FINITE + ["0", "-0.02"]:
        add(["basins", *PQ, "--gaussian", bad], f"basins-gaussian={bad!r}")
    for name in ("--t-max", "--rtol", "--atol", "--max-seconds"):
        for bad in ("nan", "inf", "", "-1"):
            add(["basins", *PQ, "--grid", "8", name, bad], f"basins{name}={bad!r}")
    add(["basins", *PQ, "--grid", "1"], "basins-grid=1")
    for bad in BAD_COUNTS[:6]:
        add(["basins", *PQ, "--grid", "8", "--workers", bad], f"basins-workers={bad!r}")
        add(["basins", *PQ, "--grid", "8", "--context", bad], f"basins-context={bad!r}")
        add(["critical", *PQ, "--context", bad], f"critical-context={bad!r}")
    add(["critical", "--regions", "--context", "8"], "critical-context-regions")  # the table is symbolic
    add(["critical", *PQ, "--context", "8", "--method", "symbolic"], "critical-context-symbolic")
    add(["critical", "--p", "0.4", "--q", "0.6", "--context", "8"], "critical-context-degenerate")
    add(["critical", *PQ, "--context", "4097"], "critical-context-too-long")
    add(["basins", *PQ, "--grid", "8", "--context", "8", "--method", "invariant"], "basins-context-invariant")
    add(["basins", *PQ, "--grid", "8", "--method", "magic"], "basins-method-unknown")
    add(["basins", *PQ, "--gaussian", "0.02", "--grid", "8"], "basins-gaussian-and-grid")
    add(["basins", *PQ, "--grid", "8", "--fix", "e=1,w=1"], "basins-fix-everything")
    add(["basins", *PQ, "--grid", "8", "--fix", "a=1"], "basins-fix-unknown")
    add(["basins", *PQ, "--grid", "8", "--fix", "e=1", "--range", "e:-1:1"], "basins-fix-and-range")
    add(["basins", *PQ, "--grid", "8", "--fix", "e=nan"], "basins-fix-nan")
    for bad in BAD_SEEDS:
        add(["basins", *PQ, "--gaussian", "0.02", "--seed", bad], f"basins-seed={bad!r}")
        add(["critical", *PQ, "--seed", bad], f"critical-seed={bad!r}")
        add(["train", "--seed", bad], f"train-seed={bad!r}")
    for name in ("--starts", "--samples"):
        for bad in BAD_COUNTS[:6]:
            add(["critical", *PQ, name, bad], f"critical{name}={bad!r}")
    add(["critical", *PQ, "--method", "guess"], "critical-method-unknown")
    add(["critical", *PQ, "--regions"], "critical-regions-with-chain")
    add(["critical", "--p", "0.2"], "critical-without-chain")
    add(["critical", *PQ, "--json", "--latex"], "critical-json-and-latex")
    for i, box in enumerate(BAD_RANGES):
        add(["critical", *PQ] + [a for b in box for a in ("--range", b)], f"critical-range-{i}")
        add(["basins", *PQ, "--grid", "8"] + [a for b in box for a in ("--range", b)], f"basins-range-{i}")
        add(["plot", "landscape", *PQ, "--out", "OUT/f.png"] + [a for b in box for a in ("--range", b)],
            f"plot-range-{i}")
    for name in ("--grid", "--resolution", "--dpi"):
        for bad in BAD_COUNTS[:6]:
            add(["plot", "landscape", *PQ, "--out", "OUT/f.png", name, bad], f"plot{name}={bad!r}")
    add(["plot", "nothing", *PQ, "--out", "OUT/f.png"], "plot-kind-unknown")
    add(["plot", "landscape", *PQ, "--model", "xyz", "--out", "OUT/f.png"], "plot-model-unknown")
    add(["plot", "landscape", *PQ, "--logit", "e*x", "--out", "OUT/f.png"], "plot-logit-without-params")
    add(["plot", "landscape", *PQ, "--logit", "__import__('os')", "--params", "e,w", "--out", "OUT/f.png"],
        "plot-logit-code")
    add(["plot", "landscape", *PQ, "--params", "e,w", "--out", "OUT/f.png"], "plot-params-without-logit")
    for bad in ("nan", "inf", "", "-1", "0"):
        add(["plot", "loss", *PQ, "--at", "e=1,w=1", "--t-max", bad, "--out", "OUT/f.png"], f"plot-t-max={bad!r}")
    add(["plot", "flow3d", *PQ, "--at", "e=1,w=1", "--out", "OUT/f.png"], "plot-flow3d-of-2d-model")
    add(["plot", "landscape", *PQ, "--fix", "e=1", "--out", "OUT/f.png"], "plot-fix-not-basins")
    for name in ("--steps", "--batch", "--seq-len", "--log-every", "--d", "--eval-sequences", "--threads"):
        for bad in ("0", "-1", "abc", ""):
            add(["train", name, bad], f"train{name}={bad!r}")
    for name in ("--lr", "--momentum", "--noise"):
        for bad in ("nan", "inf", "", "abc"):
            add(["train", name, bad], f"train{name}={bad!r}")
    add(["train", "--model", "transformer", "--noise", "-1"], "train-noise-negative")
    add(["train", "--noise", "0.1"], "train-noise-for-ewb")
    add(["train", "--optimizer", "adam"], "train-optimizer-for-ewb")
    add(["train", "--table", "--init", "standard"], "train-table-with-init")
    add(["train", "--model", "ew"], "train-model-unknown")
    for name in ("--grid", "--extent", "--margin", "--e-min"):
        for bad in ("nan", "inf", "abc", ""):
            add(["guide", name, bad], f"guide{name}={bad!r}")
    add(["guide", "--grid", "0"], "guide-grid=0")

    # -------------------------------------------------------------------- input files
    for name in KERNEL_FILES:
        add(["chain", "--kernel", f"IN/{name}"], f"chain-kernel-{name}")
    add(["chain", "--kernel", "IN/missing.json"], "chain-kernel-missing")
    add(["chain", "--kernel", "IN"], "chain-kernel-folder")
    add(["chain", "--kernel", ""], "chain-kernel-empty-name")
    add(["chain", "--kernel", "IN/one.json", "--p", "0.2"], "chain-kernel-and-p")
    add(["chain"], "chain-nothing")
    for name in ("nan.json", "nonsquare.json", "bigint.json", "negative.json"):
        add(["eval", "--kernel", f"IN/{name}", "--logit", "u*x; 0", "--params", "u", "--at", "u=1"],
            f"eval-kernel-{name}")
    kernel = ["eval", "--kernel", "IN/k3.json", "--params", "u", "--at", "u=1"]
    add(kernel + ["--logit", "u*x; 0"], "eval-kernel-too-few-logits")
    add(kernel + ["--logit", "u*x; 0; 0; 0"], "eval-kernel-too-many-logits")
    add(kernel + ["--logit", "u*x; __import__('os'); 0"], "eval-kernel-logit-code")
    add(kernel + ["--logit", "log(u)*x; 0; 0", "--at", "u=-1"], "eval-kernel-logit-nan")
    add(kernel + ["--logit", "u*x; 0; 0", "--p", "0.2"], "eval-kernel-and-p")
    add(kernel + ["--logit", "u*x; 0; 0", "--free-bias"], "eval-kernel-and-free-bias")
    add(["eval", *PQ, "--at", "u=1", "--logit", "u*x; 0", "--params", "u"], "eval-logits-without-kernel")
    for name in ("nan.json", "nonsquare.json", "reducible.json"):
        add(["flow", "--kernel", f"IN/{name}", "--logit", "u*x; 0", "--params", "u", "--at", "u=1"], f"flow-kernel-{name}")
    add(["flow", "--kernel", "IN/k3.json", "--logit", "u*x; 0", "--params", "u", "--at", "u=1"], "flow-kernel-too-few-logits")
    add(["flow", "--kernel", "IN/k3.json", "--logit", "u*x; 0; 0", "--params", "u", "--at", "u=1", *PQ],
        "flow-kernel-and-p")
    # the former spellings --logits (now --logit) and --box (now --range) still parse, and are refused alike
    add(["eval", *PQ, "--at", "u=1", "--logits", "u*x; 0", "--params", "u"], "eval-former-logits-without-kernel")
    add(["critical", *PQ, "--box", "e:3:-3"], "critical-former-box")
    add(["eval", "--at", "e=1,w=1"], "eval-without-chain")

    # -------------------------------------------------------------------- output paths
    for i, out in enumerate(["OUT/adir", "OUT/adir/", "OUT/afile/x.out", "/proc/flowlab-x.out", "", "OUT/fifo",
                             "OUT/adir/../afile/x.out"]):
        add(["derive", "--out", out], f"derive-out-{i}")
        add(["critical", *PQ, "--out", out], f"critical-out-{i}")
        add(["train", "--out", out], f"train-out-{i}")
        add(["guide", "--out", out], f"guide-out-{i}")
    for i, out in enumerate(["OUT/adir.npz", "OUT/afile/t.npz", "OUT/t.txt", "OUT/t", "/proc/flowlab-t.npz", "",
                             "OUT/t.npz/"]):
        add(["flow", *PQ, "--at", "e=1,w=1", "--trajectory", out], f"flow-trajectory-{i}")
    for i, out in enumerate(["OUT/afile", "OUT/afile/sub", "/proc/flowlab-b", "OUT/foreign", "OUT", ".", "",
                             "OUT/fifo"]):
        add(["basins", *PQ, "--grid", "8", "--out", out], f"basins-out-{i}")
        add(["basins", *PQ, "--gaussian", "0.02", "--samples", "10", "--out", out], f"basins-gaussian-out-{i}")
        add(["demo", "--fast", "--quiet", "--out", out], f"demo-out-{i}")
    add(["basins", *PQ, "--gaussian", "0.02", "--samples", "10", "--out", "OUT/earlier-grid"],
        "basins-gaussian-over-a-grid-result")
    for i, out in enumerate(["OUT/adir.png", "OUT/afile/x.png", "OUT/x.txt", "OUT/x", "/proc/flowlab-x.png", "",
                             "OUT/fifo.png", "OUT/x.png/"]):
        add(["plot", "landscape", *PQ, "--out", out], f"plot-out-{i}")
    cases += _system_cases()
    return cases


#: A valid ntp-order dataset (3 tokens; sentence [a, q]: a beats q under query q), mutated by NTP_DATA.
NTP_BASE = {"vocab": 3, "collocation": [1, 2, 0], "orders": [[[1, 0]], [[2, 1]], [[0, 2]]],
            "sentences": [[1, 0], [2, 1], [0, 2]]}
#: Broken dataset files for ``ntp-order run|targets --data``: name -> changes to NTP_BASE (or raw text).
NTP_DATA = {
    "nd-list.json": "[]", "nd-null.json": "null", "nd-string.json": '"data"', "nd-nan.json": '{"vocab": NaN}',
    "nd-nested.json": '{"vocab": 3, "collocation": ' + "[" * 100000 + "]" * 100000 + "}",
    "nd-nested-object.json": '{"a": ' * 50000 + "1" + "}" * 50000,
    "nd-bigdigits.json": '{"vocab": ' + "9" * 5000 + "}", "nd-bigint.json": {"vocab": 10**30},
    "nd-vocab-float.json": {"vocab": 3.5}, "nd-vocab-inf.json": '{"vocab": 1e400}', "nd-vocab-1.json": {"vocab": 1},
    "nd-vocab-huge.json": {"vocab": 10**6}, "nd-vocab-string.json": {"vocab": "3"}, "nd-vocab-bool.json": {"vocab": True},
    "nd-unknown-field.json": {"extra": 1}, "nd-missing-field.json": {"sentences": None},
    "nd-no-sentences.json": {"sentences": []}, "nd-token-big.json": {"sentences": [[1, 0], [10**30, 1]]},
    "nd-token-unknown.json": {"sentences": [[1, 0], [3, 1]]}, "nd-token-negative.json": {"sentences": [[-1, 0]]},
    "nd-token-float.json": {"sentences": [[1.0, 0]]}, "nd-token-string.json": {"sentences": [["1", 0]]},
    "nd-token-bool.json": {"sentences": [[True, 0]]}, "nd-token-null.json": {"sentences": [[None, 0]]},
    "nd-sentence-not-list.json": {"sentences": [1, 0]}, "nd-sentence-empty.json": {"sentences": [[]]},
    "nd-sentence-long.json": {"sentences": [[1, 2] * 40 + [0]]},
    "nd-collocation-short.json": {"collocation": [1, 2]}, "nd-collocation-token.json": {"collocation": [1, 2, 7]},
    "nd-collocation-object.json": {"collocation": {"0": 1}},
    "nd-orders-short.json": {"orders": [[[1, 0]]]}, "nd-orders-edge.json": {"orders": [[[1, 0, 2]], [], []]},
    "nd-orders-token.json": {"orders": [[[5, 0]], [], []]},
    "nd-cycle.json": {"orders": [[[1, 0], [0, 1]], [[2, 1]], [[0, 2]]]},
    "nd-cycle3.json": {"orders": [[[1, 0], [0, 2], [2, 1]], [[2, 1]], [[0, 2]]]},
    "nd-self-loop.json": {"orders": [[[0, 0]], [[2, 1]], [[0, 2]]]},
    "nd-not-realizable.json": {"sentences": [[1, 2, 0]]},
    "nd-no-order.json": {"orders": [[], [], []]},
    "nd-labels-wrong.json": {"labels": [0, 0, 0]}, "nd-labels-short.json": {"labels": [2]},
    "nd-unseen-implied.json": {"unseen_implied": [[2, 0]]},
    "nd-unseen-not-implied.json": {"unseen_not_implied": [[1, 0]], "not_implied_reference": [1]},
    "nd-reference-short.json": {"unseen_not_implied": [[2, 0]], "not_implied_reference": []},
    "nd-reference-object.json": {"not_implied_reference": {"a": 1}},
    "nd-too-many.json": {"sentences": [[1, 0]] * 100_001},
}


def _ntp_data_text(spec) -> str:
    return spec if isinstance(spec, str) else json.dumps({**NTP_BASE, **spec})


def _system_cases():
    """Hostile invocations of ``flowlab cooccurrence ACTION`` and ``flowlab ntp-order ACTION``."""
    cases = []

    def add(argv, tag):
        cases.append(_param(argv, tag))

    huge, big_float = str(10**13), "1e300"
    counts = BAD_COUNTS + [huge]
    out_dirs = ["OUT/afile", "OUT/afile/sub", "/proc/flowlab-d", "OUT/foreign", "OUT", ".", "", "OUT/fifo"]
    out_files = ["OUT/adir", "OUT/adir/", "OUT/afile/x.json", "/proc/flowlab-x.json", "", "OUT/fifo"]
    bad_files = ["IN/missing.json", "IN", "", "IN/empty.json", "IN/notjson.json", "IN/nested.json", "IN/huge.json",
                 "IN/binary.csv", "IN/scalar.json", "IN/bigint.json", *(f"IN/{name}" for name in NTP_DATA)]
    # ----------------------------------------------------------- cooccurrence claims|compare|scaling
    for engine in ("gram", "reduced", "full"):
        claims = ["cooccurrence", "claims", "--engine", engine]
        for name in ("--n", "--L", "--d", "--m", "--m1", "--points"):
            unused = (engine, name) in (("reduced", "--d"), ("full", "--points"))  # ignored: huge is no harm
            for bad in BAD_COUNTS if unused or name in ("--n", "--m", "--m1") else counts:
                add(claims + [name, bad], f"cooc-claims-{engine}{name}={bad[:12]!r}")
        for bad in NON_FINITE + ["0", "-1"] + ([big_float] if engine == "full" else []):
            add(claims + ["--t-max", bad], f"cooc-claims-{engine}-t-max={bad!r}")
        for bad in BAD_SEEDS:
            add(claims + ["--seed", bad], f"cooc-claims-{engine}-seed={bad!r}")
        for i, out in enumerate(out_dirs):
            add(claims + ["--out", out], f"cooc-claims-{engine}-out-{i}")
        # sizes that each engine refuses as too much work or memory, with an estimate
        for size in (["--L", "100000"], ["--d", "1000000"], ["--points", "1000000000"], ["--n", "2", "--L", "2"]):
            if (engine, size[0]) not in (("reduced", "--d"), ("full", "--points")):
                add(claims + size, f"cooc-claims-{engine}-size-{'='.join(size)}")
    for bad in NON_FINITE + ["0", "-1", big_float, "1e-300"]:
        add(["cooccurrence", "claims", "--engine", "full", "--lr", bad], f"cooc-claims-full-lr={bad!r}")
    for bad in ("", "Full", "exact", "gram,full"):
        add(["cooccurrence", "claims", "--engine", bad], f"cooc-claims-engine={bad!r}")
    add(["cooccurrence", "claims", "--engine", "full", "--t-max", "1e6"], "cooc-claims-full-epochs")
    add(["cooccurrence"], "cooc-no-action")
    add(["cooccurrence", "verify"], "cooc-action-unknown")
    for gd in ([], ["--gd"]):
        compare = ["cooccurrence", "compare", *gd]
        for name in ("--m", "--m1"):
            for bad in BAD_COUNTS if gd else counts:  # --gd ignores --m/--m1
                add(compare + [name, bad], f"cooc-compare{'-gd' * bool(gd)}{name}={bad[:12]!r}")
        for bad in BAD_SEEDS:
            add(compare + ["--seed", bad], f"cooc-compare{'-gd' * bool(gd)}-seed={bad!r}")
        for i, out in enumerate(out_files):
            add(compare + ["--out", out], f"cooc-compare{'-gd' * bool(gd)}-out-{i}")
    add(["cooccurrence", "compare", "--m", "2000", "--m1", "2000"], "cooc-compare-too-many-parameters")
    for bad in counts:
        add(["cooccurrence", "scaling", "--m", "64", bad], f"cooc-scaling-m={bad[:12]!r}")
    for widths in (["64"], ["64", "64"], ["10000000000000", "64"], []):
        add(["cooccurrence", "scaling", "--m", *widths], f"cooc-scaling-m={'_'.join(widths)!r}")
    for bad in BAD_SEEDS:
        add(["cooccurrence", "scaling", "--seed", bad], f"cooc-scaling-seed={bad!r}")
    for i, out in enumerate(out_dirs):
        add(["cooccurrence", "scaling", "--out", out], f"cooc-scaling-out-{i}")

    # ------------------------------------------------------------------ ntp-order run|targets|data
    for action in ("run", "data"):
        head = ["ntp-order", action] + (["--out", "OUT/d.json"] if action == "data" else [])
        for name in ("--vocab", "--sentences", "--min-len", "--max-len"):
            for bad in counts:
                add(head + [name, bad], f"ntp-{action}{name}={bad[:12]!r}")
        for bad in BAD_SEEDS + [str(2**100)]:
            add(head + ["--seed", bad], f"ntp-{action}-seed={bad!r}")
        for bad in ("-1", "", "abc", "1.5", "nan", huge):
            add(head + ["--unseen", bad], f"ntp-{action}-unseen={bad!r}")
        for sizes in (["--vocab", "1"], ["--vocab", "2"], ["--vocab", "129"], ["--min-len", "1"],
                      ["--min-len", "5", "--max-len", "4"], ["--vocab", "5", "--max-len", "6"],
                      ["--sentences", "100001"]):
            add(head + sizes, f"ntp-{action}-{'='.join(sizes)}")
    for i, out in enumerate(out_files):
        add(["ntp-order", "data", "--out", out], f"ntp-data-out-{i}")
    add(["ntp-order", "data"], "ntp-data-without-out")
    run = ["ntp-order", "run"]
    for name in ("--steps1", "--steps2"):
        for bad in counts:
            add(run + [name, bad], f"ntp-run{name}={bad[:12]!r}")
    for name in ("--lr1", "--lr2", "--init-scale", "--fit-from"):
        for bad in NON_FINITE + ["-1", big_float]:
            add(run + [name, bad], f"ntp-run{name}={bad!r}")
    for name in ("--lr1", "--lr2"):
        add(run + [name, "0"], f"ntp-run{name}=0")
    add(run + ["--fit-from", "1"], "ntp-run-fit-from=1")
    for name in ("--method", "--init", "--stage2-loss"):
        for bad in ("", "magic", "NORMALIZED"):
            add(run + [name, bad], f"ntp-run{name}={bad!r}")
    for i, out in enumerate(out_dirs):
        add(run + ["--out", out], f"ntp-run-out-{i}")
    add(run + ["--data", "IN/nd-ok.json", "--vocab", "3"], "ntp-run-data-and-vocab")
    add(run + ["--data", "IN/nd-ok.json", "--sentences", "3"], "ntp-run-data-and-sentences")
    for i, path in enumerate(bad_files):
        add(run + ["--data", path], f"ntp-run-data-{i}-{path[3:]}")
        add(["ntp-order", "targets", "--data", path], f"ntp-targets-data-{i}-{path[3:]}")
    for i, out in enumerate(out_files):
        add(["ntp-order", "targets", "--data", "IN/nd-ok.json", "--out", out], f"ntp-targets-out-{i}")
    add(["ntp-order", "targets"], "ntp-targets-without-data")
    add(["ntp-order"], "ntp-no-action")
    add(["ntp-order", "train"], "ntp-action-unknown")

    # ------------------------------------------------------------------ sweep (refused before any work)
    sweep = ["sweep", "markov", "--starts", "5", "--out", "OUT/s.zarr"]
    for name in ("--p", "--q"):
        for bad in ("0.9:0.1:5", "a:b:3", "0.1:0.5:0", "0:0.5:3", "0.2,0.2", "nan", "", "1:2:3:4"):
            add(sweep + [name, bad] + (["--q", "0.3"] if name == "--p" else ["--p", "0.3"]), f"sweep{name}={bad!r}")
    for bad in ("-0.1", "0", "inf", "x"):
        add(sweep + ["--p", "0.3", "--q", "0.4", "--sigma", bad], f"sweep-sigma={bad!r}")
    for name, bad in (("--model", "xyz"), ("--model", ""), ("--starts", "0"), ("--starts", "1e3"), ("--seed", "-1"),
                      ("--seed", "4294967296"), ("--method", "magic"), ("--workers", "0"), ("--max-seconds", "0"),
                      ("--max-seconds", "nan"), ("--scheduler", "not an address"), ("--scheduler", "tcp://")):
        add(sweep + ["--p", "0.3", "--q", "0.4", name, bad], f"sweep{name}={bad!r}")
    add(["sweep", "markov", "--p", "0.3", "--q", "0.4", "--method", "invariant", "--model", "ewb", "--out",
         "OUT/s.zarr"], "sweep-invariant-ewb")
    for switch in ("--resume", "--no-resume", "--processes", "--no-processes"):  # a folder that is not a sweep store
        add(["sweep", "markov", "--p", "0.3", "--q", "0.4", "--starts", "5", switch, "--out", "IN"], f"sweep{switch}")
    add(["sweep", "nope", "--p", "0.3", "--q", "0.4", "--out", "OUT/s.zarr"], "sweep-system-unknown")
    add(["sweep", "cooccurrence", "--p", "0.3", "--q", "0.4", "--out", "OUT/s.zarr"], "sweep-cooc-p")
    co = ["sweep", "cooccurrence", "--out", "OUT/s.zarr"]
    ints = ("1.5", "a", "", "nan", "1e400", "1:2:3", "3,3")
    for name, bads in (("--m", ints + ("0", str(10**13))), ("--L", ints + ("2", "1001")),
                       ("--seed-grid", ints + ("-1", "4294967296"))):
        for bad in bads:
            add(co + [name, bad] + ([] if name == "--m" else ["--m", "16"]), f"sweep-cooc{name}={bad!r}")
    for name, bads in (("--n", counts + ["5", "100001"]), ("--d", counts + ["3", "513"]),
                       ("--m1", counts + [str(10**13)]), ("--init", ["", "magic"])):
        for bad in bads:
            add(co + ["--m", "16", name, bad], f"sweep-cooc{name}={bad[:12]!r}")
    add(co + ["--m", "16", "--n", "100000", "--L", "1000"], "sweep-cooc-n-L-d-too-large")
    ntp = ["sweep", "ntp_order", "--out", "OUT/s.zarr"]
    for name, bads in (("--vocab", ints + ("2", "129", "5")), ("--sentences", ints + ("0", "100001")),
                       ("--seed-grid", ints + ("-1", "4294967296"))):
        for bad in bads:
            add(ntp + [name, bad] + ([] if name == "--vocab" else ["--vocab", "6"]), f"sweep-ntp{name}={bad!r}")
    for name, bads in (("--steps1", counts + ["1000001"]), ("--steps2", counts + ["1000001"]),
                       ("--stage2-loss", ["", "magic"])):
        for bad in bads:
            add(ntp + ["--vocab", "6", name, bad], f"sweep-ntp{name}={bad[:12]!r}")
    grids = {"markov": ["--p", "0.3", "--q", "0.4", "--starts", "5"], "cooccurrence": ["--m", "16"],
             "ntp_order": ["--vocab", "6"]}
    for system, grid in grids.items():  # the options every sweep shares
        head = ["sweep", system, *grid]
        for name, bad in (("--workers", "0"), ("--max-seconds", "0"), ("--max-seconds", "nan"),
                          ("--scheduler", "not an address"), ("--figure", "OUT/f.txt"), ("--figure", "OUT/f"),
                          ("--figure", ""), ("--figure", "/proc/flowlab-x.png"), ("--figure", "OUT/afile/x.png")):
            add(head + ["--out", "OUT/s.zarr", name, bad], f"sweep-{system}{name}={bad!r}")
        for i, out in enumerate(out_dirs):
            add(head + ["--out", out], f"sweep-{system}-out-{i}")
        for switch in ("--resume", "--no-resume", "--processes", "--no-processes"):
            add(head + [switch, "--out", "IN"], f"sweep-{system}{switch}")
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    for name, content in KERNEL_FILES.items():
        (folder / name).write_bytes(content.encode("utf-8", "surrogateescape"))
    (folder / "k3.json").write_text("[[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]]")
    for name, spec in NTP_DATA.items():
        (folder / name).write_text(_ntp_data_text(spec))
    (folder / "nd-ok.json").write_text(json.dumps(NTP_BASE))
    return folder


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The output location: the current folder, with a file, a folder, a folder of the user's and a result."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("mine\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir.npz").mkdir()
    (tmp_path / "adir.png").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine\n")
    (tmp_path / "earlier-grid").mkdir()
    (tmp_path / "earlier-grid" / "basins.json").write_text("{}\n")
    # not a regular file (a FIFO here: never /dev/null, which a regression run as root would replace)
    os.mkfifo(tmp_path / "fifo")
    os.mkfifo(tmp_path / "fifo.png")
    return tmp_path


def tree(folder: Path) -> dict:
    """Every path under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def run_cli(argv):
    """``flowlab.cli.app.main(argv)`` in-process: (exit code, stdout, stderr, warnings raised)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue(), [str(x.message) for x in w]


def assert_refused(rc, out, err, warned, *, code=2):
    assert rc == code, (rc, err)
    assert "Traceback" not in err, err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("flowlab") and "error" in lines[0], err
    assert out == "", out
    assert not warned, warned


@pytest.mark.parametrize("argv", CASES)
def test_hostile_invocation_is_refused_with_one_line(argv, workdir, inputs):
    argv = [a.replace("IN", str(inputs), 1) if a.startswith("IN") else a for a in argv]
    argv = [a.replace("OUT", str(workdir), 1) if a.startswith("OUT") else a for a in argv]
    before = tree(workdir)
    assert_refused(*run_cli(argv))
    assert tree(workdir) == before


def test_there_are_at_least_250_hostile_invocations():
    assert len(CASES) + len(UNBOUNDED) >= 250, len(CASES)


def _command_path(argv) -> tuple:
    """The (sub)command an argv runs: ('eval',) or, for the command families, ('ntp-order', 'run')."""
    return tuple(argv[:2]) if argv[0] in NESTED and len(argv) > 1 else (argv[0],)


#: Commands whose first argument is an action with options of its own (nested subparsers).
NESTED = ("cooccurrence", "ntp-order", "sweep")


def test_every_argument_of_every_command_is_exercised():
    """Each option that `flowlab COMMAND [ACTION] --help` lists appears in some hostile invocation."""
    from flowlab.cli.app import build_parser

    used = {(_command_path(c.values[0]), a) for c in CASES for a in c.values[0]}
    used |= {(_command_path(argv), a) for argv, _ in UNBOUNDED for a in argv}
    missing, walked = [], set()
    flags = {"--json", "--latex", "--quiet", "--fast", "--regions", "--allow-degenerate", "--free-bias",
             "--layer-norm", "--table", "--help", "--format", "--version", "--gd"}  # switches/choices tested elsewhere
    for path, parser in walk_commands(build_parser()):
        walked.add(path)
        for action in parser._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt not in flags and (path, opt) not in used:
                    missing.append(f"{' '.join(path)} {opt}")
    assert not missing, missing
    expected = {("chain",), ("derive",), ("eval",), ("flow",), ("critical",), ("basins",), ("plot",), ("guide",),
                ("train",), ("demo",), ("cooccurrence", "claims"), ("cooccurrence", "compare"),
                ("cooccurrence", "scaling"), ("ntp-order", "run"), ("ntp-order", "targets"), ("ntp-order", "data"),
                ("sweep", "markov"), ("sweep", "cooccurrence"), ("sweep", "ntp_order")}
    assert expected <= walked, expected - walked


# ------------------------------------------------------------------ property-based sweeps
TEXT = st.text(alphabet=st.sampled_from(list("ewabxm=:,;.+-*/()_ 0123456789naifE\u00b2\u00bd")) | st.characters(),
               max_size=24)
HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _refused_or_fine(argv, allowed=(0, 2)):
    rc, out, err, warned = run_cli(argv)
    assert rc in allowed, (argv, rc, err)
    assert "Traceback" not in err, err
    assert not warned, (argv, warned)
    if rc:
        assert_refused(rc, out, err, warned)


@HYPOTHESIS
@given(text=TEXT)
def test_random_points(text):
    _refused_or_fine(["eval", *PQ, f"--at={text}"])


@HYPOTHESIS
@given(text=TEXT)
def test_random_ranges_and_fixes(text):
    # --grid 1 is refused after the range and the slice are read: every valid text ends in exit 2
    _refused_or_fine(["basins", *PQ, "--grid", "1", f"--range={text}"], allowed=(2,))
    _refused_or_fine(["basins", *PQ, "--grid", "1", f"--fix={text}"], allowed=(2,))
    _refused_or_fine(["critical", "--p", "0.2", f"--box={text}"], allowed=(2,))


@HYPOTHESIS
@given(text=TEXT)
def test_random_logits(text):
    _refused_or_fine(["eval", *PQ, f"--logit={text}", "--params", "e,w", "--at", "e=0.5,w=0.5"])


@HYPOTHESIS
@given(value=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**30, 10**30))
def test_random_probabilities(value):
    _refused_or_fine(["chain", "--p", repr(value), "--q", "0.3"])


# --------------------------------------------------------- unbounded work (item 11), in subprocesses
UNBOUNDED = [
    (["plot", "landscape", *PQ, "--dpi", "100000", "--out", "f.png"], "plot-dpi"),
    (["plot", "landscape", *PQ, "--resolution", "100000", "--out", "f.png"], "plot-resolution"),
    (["plot", "basins", *PQ, "--grid", "100000", "--out", "f.png"], "plot-grid"),
    (["train", "--model", "transformer", "--d", "100000"], "train-d"),
    (["train", "--model", "transformer", "--eval-sequences", "1000000000"], "train-eval-sequences"),
    (["train", "--steps", "1000000000000"], "train-steps"),
    (["train", "--batch", "1000000000"], "train-batch"),
    (["train", "--seq-len", "1000000000"], "train-seq-len"),
    (["flow", "--model", "ewa", *PQ, "--at", "e=1,w=1,a=0", "--context", "100000"], "flow-context"),
    (["eval", "--model", "ewa", *PQ, "--at", "e=1,w=1,a=0", "--context", "1000000000"], "eval-context"),
    (["basins", *PQ, "--grid", "100000"], "basins-grid"),
    (["basins", *PQ, "--gaussian", "0.02", "--samples", "1000000000000"], "basins-samples"),
    (["critical", *PQ, "--starts", "1000000000000"], "critical-starts"),
    (["critical", "--model", "ewa", *PQ, "--context", "4096", "--starts", "1048576"], "critical-context-starts"),
    (["guide", "--grid", "1000000"], "guide-grid"),
    (["sweep", "markov", "--p", "0.01:0.99:1024", "--q", "0.01:0.99:1024", "--starts", "100000", "--out", "s.zarr"],
     "sweep-time"),
    *((["cooccurrence", "claims", "--engine", engine, *size], f"cooc-claims-{engine}-{'='.join(size)}")
      for engine in ("gram", "reduced", "full") for size in (["--n", "100000"], ["--m", "1000000000000"],
                                                                ["--m1", "1000000000000"], ["--t-max", "1e300"])
      if engine != "full" or size[0] == "--n"),
]


def run_subprocess(argv, cwd, timeout=60):
    """``flowlab ARGV`` in a subprocess limited to 3 GiB of address space."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
            "from flowlab.cli.app import main; sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("argv", [_param(a, i) for a, i in UNBOUNDED])
def test_unbounded_work_is_refused_up_front(argv, tmp_path):
    proc = run_subprocess(argv, tmp_path, timeout=30)
    assert_refused(proc.returncode, proc.stdout, proc.stderr, [])
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------- the last resort (exit 1)
def test_unexpected_error_is_one_line_exit_1_and_debug_shows_the_traceback(monkeypatch, tmp_path):
    import flowlab.cli.analysis as cli

    def boom(args):
        raise ZeroDivisionError("float division by zero\nsecond line")

    monkeypatch.setattr(cli, "cmd_chain", boom)
    monkeypatch.delenv("FLOWLAB_DEBUG", raising=False)
    rc, out, err, _ = run_cli(["chain", "--p", "0.2", "--q", "0.3"])
    assert rc == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("flowlab chain: failed (ZeroDivisionError: float division by zero second line)")
    monkeypatch.setenv("FLOWLAB_DEBUG", "1")
    rc, out, err, _ = run_cli(["chain", "--p", "0.2", "--q", "0.3"])
    assert rc == 1 and "Traceback (most recent call last)" in err and "ZeroDivisionError" in err


def test_input_errors_are_not_swallowed_by_the_last_resort():
    rc, out, err, _ = run_cli(["chain", "--p", "2", "--q", "0.3"])
    assert rc == 2 and "p must lie strictly between 0 and 1" in err and "failed" not in err


def test_help_and_version_exit_0():
    for argv in (["--help"], ["basins", "--help"], ["--version"]):
        assert run_cli(argv)[0] == 0


# --------------------------------------------------------------------------- numbers as given
def test_numbers_are_printed_with_the_digits_that_matter():
    rc, out, err, _ = run_cli(["eval", "--p", "0.999999999", "--q", "0.999999999", "--at", "e=1,w=1"])
    assert rc == 0 and "p=0.999999999, q=0.999999999" in out
    rc, out, err, _ = run_cli(["flow", "--p", "0.500000000001", "--q", "0.499999999999", "--at", "e=1,w=1"])
    assert rc == 2 and "q=0.499999999999" in err and "q=0.5)" not in err
    from flowlab.systems.markov.chain import MarkovChain

    for p in (0.1, 1e-300, 0.999999999, 0.1 + 0.2):
        assert float(str(MarkovChain(p, 0.3)).split(",")[0][2:]) == p


@pytest.mark.slow
def test_basins_cross_check_never_claims_what_it_did_not_measure():
    """With almost no flow time most points stay undetermined: the line counts them, it does not call the
    missing decisions disagreement (it used to print 'agreement 0.00000' with zero disagreements)."""
    argv = ["basins", "--p", "0.2", "--q", "0.3", "--grid", "5", "--quiet", "--t-max", "1e-9"]
    rc, out, err, _ = run_cli(argv + ["--json"])
    assert rc == 0
    x = json.loads(out)["cross_check"]
    far, bad, und = x["points_far_from_separatrix"], x["disagreements_far"], x["undetermined_far"]
    assert far > 0 and und > 0
    assert x["agreement_far"] == (far - bad - und) / far
    rc, out, err, _ = run_cli(argv)
    assert f"on the {far} points" in out and f"{far - bad - und} agree, {bad} disagree, {und} undetermined" in out
    assert "agreement" not in out


# ---------------------------------------------------------------------- files: umask, atomicity
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_outputs_honour_the_umask(mask, tmp_path):
    from flowlab.engine.io import atomic_folder, atomic_write_text

    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_folder(tmp_path / "res") as folder:
            atomic_write_text(folder / "b.txt", "y")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "res" / "b.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "res").stat().st_mode & 0o777 == 0o777 & ~mask


def test_atomic_folder_leaves_the_old_result_or_the_new_one(tmp_path):
    from flowlab.engine.io import atomic_folder

    target = tmp_path / "res"
    with atomic_folder(target, replaceable=("a", "b")) as folder:
        (folder / "a").write_text("old a")
        (folder / "b").write_text("old b")
    with pytest.raises(KeyboardInterrupt), atomic_folder(target, replaceable=("a", "b")) as folder:
        (folder / "a").write_text("new a")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt), atomic_folder(tmp_path / "new" / "deeper" / "res") as folder:
        raise KeyboardInterrupt  # the folders made for it go too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    assert (target / "a").read_text() == "old a" and (target / "b").read_text() == "old b"
    with atomic_folder(target, replaceable=("a", "b")) as folder:
        (folder / "a").write_text("new a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    assert sorted(p.name for p in target.iterdir()) == ["a"]


def test_a_folder_result_survives_kill_9_between_its_files(tmp_path):
    """SIGKILL after the first of two files: the earlier folder stays whole; the next run removes the debris."""
    script = (
        "import os, signal, sys\n"
        "from flowlab.engine.io import atomic_folder, atomic_write_text\n"
        "with atomic_folder(sys.argv[1], replaceable=('a', 'b')) as tmp:\n"
        "    atomic_write_text(tmp / 'a', sys.argv[2])\n"
        "    if sys.argv[3] == 'kill':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    atomic_write_text(tmp / 'b', sys.argv[2])\n"
    )
    out = tmp_path / "res"

    def run(tag, how):
        return subprocess.run([sys.executable, "-c", script, str(out), tag, how], capture_output=True,
                              timeout=60, check=False).returncode

    assert run("old", "done") == 0
    assert run("new", "kill") == -signal.SIGKILL
    assert (out / "a").read_text() == (out / "b").read_text() == "old"
    assert len(list(tmp_path.iterdir())) == 2  # res and the killed run's hidden .res.partial-PID-*
    assert run("newer", "done") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    assert (out / "a").read_text() == (out / "b").read_text() == "newer"


@pytest.mark.slow
def test_basins_result_survives_kill_9_during_save(tmp_path):
    """SIGKILL between the two files of a grid: the earlier result stays whole; the next run cleans up."""
    script = (
        "import os, signal, sys\n"
        "import flowlab, flowlab.engine.io as fio\n"
        "from flowlab.systems.markov.basins import basin_grid\n"
        "g = basin_grid(flowlab.get_model('ew'), flowlab.MarkovChain(0.2, 0.3), None, int(sys.argv[2]),\n"
        "               method='invariant', quiet=True)\n"
        "g.save(sys.argv[1])\n"
        "if sys.argv[3] == 'kill':\n"
        "    real = fio.atomic_write_bytes\n"
        "    def write(path, data):\n"
        "        real(path, data)\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    fio.atomic_write_bytes = write\n"
        "    g2 = basin_grid(flowlab.get_model('ew'), flowlab.MarkovChain(0.2, 0.3), None, 5, method='invariant', quiet=True)\n"
        "    g2.save(sys.argv[1])\n"
    )
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, "-c", script, str(out), "4", "kill"], capture_output=True,
                          timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with np.load(out / "basins.npz", allow_pickle=False) as data:
        assert data["label"].shape == (4, 4)
    assert json.loads((out / "basins.json").read_text())["shape"] == [4, 4]
    assert any(p.name.startswith(".res.partial-") for p in tmp_path.iterdir())  # the killed run's folder
    subprocess.run([sys.executable, "-c", script, str(out), "6", "done"], check=True, timeout=120)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    with np.load(out / "basins.npz", allow_pickle=False) as data:
        assert data["label"].shape == (6, 6)
    assert json.loads((out / "basins.json").read_text())["shape"] == [6, 6]


# ------------------------------------------------------------------------------ Ctrl-C
def _interrupt(argv, cwd, *, wait=1.5, ready=None):
    """Start ``flowlab ARGV``, send SIGINT once it is at work, return (exit code, stderr after 'ready')."""
    code = ("import sys; from flowlab.cli.app import main; sys.stderr.write('ready\\n'); sys.stderr.flush(); "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    err = b""
    deadline = time.monotonic() + 120
    while b"ready\n" not in err and time.monotonic() < deadline:
        if select.select([proc.stderr], [], [], 1.0)[0]:
            err += os.read(proc.stderr.fileno(), 4096)
    start = time.monotonic()
    while time.monotonic() < deadline and (time.monotonic() - start < wait or (ready and not ready())):
        time.sleep(0.1)
    assert proc.poll() is None, "the command ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    return proc.returncode, (err + rest).decode().split("ready\n", 1)[1]


@pytest.mark.slow
@pytest.mark.parametrize("argv", [
    pytest.param(["basins", *PQ, "--grid", "900", "--quiet", "--out", "res"], id="basins"),  # ~8 s on 2 processes
    pytest.param(["critical", "--p", "0.1", "--q", "0.1", "--out", "res.json"], id="critical"),
    pytest.param(["train", "--steps", "20000", "--quiet", "--out", "res.json"], id="train"),
])
def test_ctrl_c_exits_130_with_one_line_and_no_output(argv, tmp_path):
    rc, err = _interrupt(argv, tmp_path)
    assert rc == 130, err
    assert err.strip().split("\n") == [f"flowlab {argv[0]}: interrupted; no partial output was left"], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_ctrl_c_in_demo_leaves_no_folder(tmp_path):
    def started():  # the demo is at work in its temporary folder
        return any(p.name.startswith(".demo.partial-") and any(p.iterdir()) for p in tmp_path.iterdir())

    rc, err = _interrupt(["demo", "--fast", "--quiet", "--out", "demo"], tmp_path, wait=0, ready=started)
    assert rc == 130, err
    assert err.strip().split("\n") == ["flowlab demo: interrupted; no partial output was left"], err
    assert list(tmp_path.iterdir()) == []
