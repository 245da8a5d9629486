"""The co-occurrence sweep: the end of Phase 1, T1, over (m, L, seed) (MODELS.md section 6).

Each cell is the Gram flow of :func:`flowlab.systems.cooccurrence.experiments.scaling` for one width m:
the training set ``training_set(n, L, d, seed)``, Wishart Grams drawn with ``seed``, integrated until
the loss is below log(2)/(2n); T1 is the first up-crossing of min_i y_i F_i through 0. A cell equals
``scaling((m, ...), L=L, seed=seed, n=n, d=d, m1=m1).T1[0]``. A flow without a positive T1 is
``no_T1`` (T1 keeps its fill value NaN).
"""

from __future__ import annotations

import math

import numpy as np

from flowlab.engine.checks import FlowlabInputError, integer
from flowlab.engine.sweep import SweepDefinition, Variable, integer_axis

STATUS = {"pending": -1, "ok": 0, "no_T1": 1}
VARIABLES = (
    Variable("T1", "float64", np.nan, "end of Phase 1: first up-crossing of min_i y_i F_i through 0 (flow time)"),
    Variable("T1_times_m", "float64", np.nan, "T1 x m (about constant if T1 ~ 1/m, the paper's claim)"),
    Variable("status", "int8", -1, "cell status code (see the codes attribute)", codes=STATUS),
)


def setup(settings: dict):
    """Nothing is shared between cells (each draws its own data and Grams)."""
    return None


def cell(state, coords: dict, index: int, settings: dict) -> dict:
    """T1 of one (m, L, seed) (see the module docstring)."""
    from flowlab.systems.cooccurrence.data import training_set
    from flowlab.systems.cooccurrence.gram import gram_flow, wishart_grams

    m, L, seed = int(coords["m"]), int(coords["L"]), int(coords["seed"])
    data = training_set(settings["n"], L, settings["d"], seed)
    grams = wishart_grams(settings["d"], m, settings["m1"], L=L, seed=seed, init=settings["init"])
    traj = gram_flow(data, grams, m, settings["m1"], loss_target=math.log(2.0) / (2 * data.n), n_out=60,
                     quiet=True, record_events=False)
    t1 = traj.extra["T1_event"]
    if t1 is None or not t1 > 0:
        return {"status": STATUS["no_T1"]}
    return {"T1": t1, "T1_times_m": t1 * m, "status": STATUS["ok"]}


def definition(m, L, seed, *, n: int = 60, d: int = 64, m1: int = 256, init: str = "paper",
               tile=None) -> SweepDefinition:
    """The sweep over widths ``m`` x sequence lengths ``L`` x seeds ``seed`` (sequences of integers), each
    checked up front (the limits of :func:`~.data.training_set` and of the Gram flow)."""
    from .data import MAX_L, _check_sizes
    from .gram import MAX_D, MAX_WIDTH

    coords = {"m": integer_axis(m, "m", 1, MAX_WIDTH), "L": integer_axis(L, "L", 3, MAX_L),
              "seed": integer_axis(seed, "seed", 0, 2**32 - 1)}
    if init not in ("paper", "kaiming"):
        raise FlowlabInputError(f"unknown init {init!r}; choose paper or kaiming")
    settings = {"n": integer(n, "n", 6), "d": integer(d, "d", 4, MAX_D), "m1": integer(m1, "m1", 1, MAX_WIDTH),
                "init": init}
    for length in coords["L"]:
        _check_sizes(settings["n"], int(length), settings["d"], 0)
    per_cell = 0.5 + 1e-3 * float(np.max(coords["m"])) ** 0.5 * settings["n"]
    return SweepDefinition(system="cooccurrence", dims=("m", "L", "seed"), coords=coords, variables=VARIABLES,
                           settings=settings, cell=cell, setup=setup, seconds_per_cell=per_cell,
                           tile=tile or (1, 1, 4))

