"""The Markov sweep: P(global) from K Gaussian starts at scale sigma, over (sigma, p, q), one model.

Each cell is :func:`flowlab.systems.markov.basins.gaussian_basin` of its chain with the seed
:func:`cell_seed` (settings seed, cell index), so a cell equals the direct single-(p, q) computation
with that seed. Chains with p + q = 1 (degenerate: unigram = bigram) and, for the flow method,
nearly degenerate chains are not computed: their ``status`` says so and the numbers keep the fill
values. The critical sets of the box (display only in ``gaussian_basin``) are not computed here.
"""

from __future__ import annotations

import numpy as np

from flowlab.engine.checks import FlowlabInputError, integer, probability
from flowlab.engine.sweep import SweepDefinition, Variable

#: Cell status codes (the ``status`` variable; -1 = not computed yet).
STATUS = {"pending": -1, "ok": 0, "degenerate": 1, "nearly_degenerate": 2}
#: Rough cost of one start (seconds), for the up-front estimate.
SECONDS_PER_START = {"flow": 3e-4, "invariant": 1e-6}

VARIABLES = (
    Variable("prob_global", "float64", np.nan, "P(reach a global minimum) = n_global / starts"),
    Variable("ci_low", "float64", np.nan, "lower end of the 95% Wilson interval (undetermined counted not global)"),
    Variable("ci_high", "float64", np.nan, "upper end of the 95% Wilson interval (undetermined counted global)"),
    Variable("n_global", "int64", -1, "starts that reached a global minimum (the bigram model)"),
    Variable("n_nonglobal", "int64", -1, "starts that reached a non-global minimum (the unigram set)"),
    Variable("n_undetermined", "int64", -1, "starts whose end could not be decided"),
    Variable("seed", "int64", -1, "the cell's seed: gaussian_basin(model, chain, sigma, starts, seed) reproduces it"),
    Variable("status", "int8", -1, "cell status code (see the codes attribute)", codes=STATUS),
)


def cell_seed(seed: int, index: int) -> int:
    """The seed of cell ``index`` (flat C-order index), derived deterministically from the sweep's seed."""
    return int(np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1, dtype=np.uint32)[0])


def setup(settings: dict):
    """Per-worker state: the model with its compiled numeric form (built once per worker)."""
    from flowlab.systems.markov.chain import MarkovChain
    from flowlab.systems.markov.models import get_model
    from flowlab.systems.markov.system import MarkovSystem

    model = get_model(settings["model"])
    MarkovSystem(model, MarkovChain(0.3, 0.4)).reference()  # compiles and solves the structure (cached) once
    return model


def cell(model, coords: dict, index: int, settings: dict) -> dict:
    """One cell: the Gaussian basin of the chain (p, q) at scale sigma (see the module docstring); the
    labels of :func:`flowlab.systems.markov.basins.gaussian_basin` without its display-only critical sets."""
    from flowlab.engine.basins import gaussian_basin, gaussian_starts, label_counts, wilson_interval
    from flowlab.systems.markov.basins import invariant_labels
    from flowlab.systems.markov.chain import MarkovChain
    from flowlab.systems.markov.system import MarkovSystem

    chain = MarkovChain(coords["p"], coords["q"])
    seed = cell_seed(settings["seed"], index)
    if chain.degenerate:
        return {"seed": seed, "status": STATUS["degenerate"]}
    if chain.nearly_degenerate and settings["method"] == "flow":
        return {"seed": seed, "status": STATUS["nearly_degenerate"]}
    system, sigma, starts = MarkovSystem(model, chain), coords["sigma"], settings["starts"]
    if settings["method"] == "invariant":
        c = label_counts(invariant_labels(system.numeric, gaussian_starts(sigma, starts, seed, len(model.params))))
        n_global, n_nonglobal, n_undetermined = c["global"], c["nonglobal"], c["undetermined"]
    else:
        r = gaussian_basin(system, sigma, starts, seed, reference=system.reference(), quiet=True)
        n_global, n_nonglobal, n_undetermined = r.n_global, r.n_nonglobal, r.n_undetermined
    return {"prob_global": n_global / starts, "ci_low": wilson_interval(n_global, starts)[0],
            "ci_high": wilson_interval(n_global + n_undetermined, starts)[1], "n_global": n_global,
            "n_nonglobal": n_nonglobal, "n_undetermined": n_undetermined, "seed": seed, "status": STATUS["ok"]}


def definition(p, q, sigma, *, model: str = "ew", starts: int = 2000, seed: int = 0, method: str = "flow",
               tile=None) -> SweepDefinition:
    """The sweep over ``sigma`` x ``p`` x ``q`` (arrays of float64) for one preset ``model``."""
    from flowlab.engine.basins import MAX_POINTS
    from flowlab.systems.markov.models import PRESET_NAMES

    if model not in PRESET_NAMES:
        raise FlowlabInputError(f"unknown model {model!r}; a sweep takes a preset: {', '.join(PRESET_NAMES)}")
    if method not in SECONDS_PER_START:
        raise FlowlabInputError(f"unknown method {method!r}; choose one of {', '.join(SECONDS_PER_START)}")
    if method == "invariant" and model != "ew":
        raise FlowlabInputError("the invariant method needs model ew (the conserved energy E); use --method flow")
    coords = {"sigma": _axis(sigma, "sigma", positive=True), "p": _axis(p, "p"), "q": _axis(q, "q")}
    starts = integer(starts, "starts", 1, MAX_POINTS)
    settings = {"model": model, "starts": starts, "seed": integer(seed, "seed", 0, 2**32 - 1), "method": method}
    return SweepDefinition(system="markov", dims=("sigma", "p", "q"), coords=coords, variables=VARIABLES,
                           settings=settings, cell=cell, setup=setup,
                           seconds_per_cell=0.02 + starts * SECONDS_PER_START[method], tile=tile)


def _axis(values, name: str, positive: bool = False) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0:
        raise FlowlabInputError(f"{name} must be a non-empty list of numbers")
    for v in arr:
        if positive:
            if not (np.isfinite(v) and v > 0):
                raise FlowlabInputError(f"{name} must be positive and finite, got {v!r}")
        else:
            probability(float(v), name)
    if len(np.unique(arr)) != arr.size:
        raise FlowlabInputError(f"{name} values must be distinct")
    return arr
