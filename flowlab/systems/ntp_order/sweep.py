"""The ntp_order sweep: the fitted rates of Algorithm 1 (reconstructed, MODELS.md section 7) over
(vocab K, sentences, seed).

One cell is one run of :func:`flowlab.systems.ntp_order.measure.run_experiment` on
``generate(vocab, sentences, seed, min_len=..., max_len=..., unseen=...)`` with the initialisation
seed ``seed`` (as ``flowlab ntp-order run --vocab K --sentences N --seed S --steps1 .. --steps2 ..``):
the max-margin targets (cvxpy + Clarabel), both stages, and per stage (``ov`` = stage 1 on W_ov,
``kq`` = stage 2 on W_kq) the three fitted rates of :mod:`~.measure` with their R²: the exponent a of
1 − cos(W_t, W*) ≈ C t^(−a) (``dir_rate``), the ratio r of L_t − L_inf ≈ C r^t (``loss_rate``) and the
slope of ‖W_t‖_F against t (``norm_slope``), plus the final cosine and loss and the accuracies.

Cheap by default: 300 stage-1 and 3000 stage-2 iterations (``flowlab ntp-order run`` uses 1000 and
20 000; with fewer stage-2 iterations the direction exponent of W_kq is measured before its
asymptotic regime, so it is smaller: raise ``steps2`` for the paper-like rate). A fit that cannot be
made (fewer than 3 usable points) keeps the fill value NaN; the ``status`` variable is the run's
status (``completed``, ``degenerate``: no sentence has two distinct tokens, ``failed``).
"""

from __future__ import annotations

import numpy as np

from flowlab.engine.checks import FlowlabInputError, integer, real_number
from flowlab.engine.sweep import SweepDefinition, Variable, integer_axis

#: Cell status codes (the ``status`` variable; -1 = not computed yet), from the run's status.
STATUS = {"pending": -1, "completed": 0, "degenerate": 1, "failed": 2}
#: The stages: variable suffix -> (result attribute, matrix).
STAGES = {"ov": ("stage1", "W_ov"), "kq": ("stage2", "W_kq")}
#: The fitted rates of a stage: name -> what it is.
RATES = {"dir_rate": "exponent a of 1 - cos(W_t, W*) ~ C t^-a",
         "loss_rate": "ratio r of L_t - L_inf ~ C r^t (geometric)",
         "norm_slope": "slope of ||W_t||_F against t"}
#: Cheap defaults of a cell's training (see the module docstring).
DEFAULTS = {"steps1": 300, "steps2": 3000, "method": "normalized", "stage2_loss": "ce", "init": "gaussian",
            "init_scale": 0.01, "min_len": 3, "max_len": 6, "unseen": 200, "fit_from": 0.1}


def _variables() -> tuple[Variable, ...]:
    out = []
    for suffix, (stage, matrix) in STAGES.items():
        for rate, what in RATES.items():
            out.append(Variable(f"{rate}_{suffix}", "float64", np.nan, f"{stage} ({matrix}): {what}"))
            out.append(Variable(f"{rate}_{suffix}_r2", "float64", np.nan, f"{stage} ({matrix}): R² of {rate}"))
        out.append(Variable(f"cos_{suffix}", "float64", np.nan, f"{stage}: cos(W_T, {matrix}*) at the end"))
        out.append(Variable(f"final_loss_{suffix}", "float64", np.nan, f"{stage}: loss at the end"))
    out += [Variable("acc_train", "float64", np.nan, "accuracy on the training sentences"),
            Variable("acc_unseen_implied", "float64", np.nan,
                     "accuracy on unseen sentences whose optimum the transitive closure implies"),
            Variable("status", "int8", -1, "cell status code (see the codes attribute)", codes=STATUS)]
    return tuple(out)


VARIABLES = _variables()


def setup(settings: dict):
    """Nothing is shared between cells (each generates its own data and solves its own targets)."""
    return None


def run_cell(vocab: int, sentences: int, seed: int, settings: dict):
    """The run of one cell: :func:`~.measure.run_experiment` on the generated data (module docstring)."""
    from .data import generate
    from .measure import run_experiment

    data = generate(vocab, sentences, seed, min_len=settings["min_len"], max_len=settings["max_len"],
                    unseen=settings["unseen"])
    options = {k: settings[k] for k in ("steps1", "steps2", "method", "stage2_loss", "init", "init_scale")}
    return run_experiment(data, fit_from=settings["fit_from"], seed=seed, **options)


def cell(state, coords: dict, index: int, settings: dict) -> dict:
    """The fitted rates of one (vocab, sentences, seed) (see the module docstring)."""
    r = run_cell(int(coords["vocab"]), int(coords["sentences"]), int(coords["seed"]), settings)
    out = {"status": STATUS[r.status]}
    for suffix, (stage, _) in STAGES.items():
        summary = getattr(r, stage)
        for rate in RATES:
            fit = getattr(summary, rate)
            out[f"{rate}_{suffix}"], out[f"{rate}_{suffix}_r2"] = fit.value, fit.r2
        out[f"cos_{suffix}"], out[f"final_loss_{suffix}"] = summary.cos, summary.final_loss
    out["acc_train"], out["acc_unseen_implied"] = r.accuracy["train"], r.accuracy["unseen_implied"]
    return {k: v for k, v in out.items() if v is not None}


def definition(vocab, sentences, seed, *, tile=None, **options) -> SweepDefinition:
    """The sweep over ``vocab`` x ``sentences`` x ``seed`` (sequences of integers); ``options``: the keys of
    :data:`DEFAULTS` (training and data options of every cell), checked up front."""
    from .data import LIMITS
    from .training import settings_with_defaults

    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise FlowlabInputError(f"unknown ntp_order sweep options {unknown}; allowed: {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    coords = {"vocab": integer_axis(vocab, "vocab", 3, LIMITS["vocab"]),
              "sentences": integer_axis(sentences, "sentences", 1, LIMITS["sentences"]),
              "seed": integer_axis(seed, "seed", 0, 2**32 - 1)}
    s["min_len"] = integer(s["min_len"], "min_len", 2, LIMITS["length"])
    s["max_len"] = integer(s["max_len"], "max_len (longest sentence, at most the smallest vocab)", s["min_len"],
                           int(coords["vocab"].min()))
    s["unseen"] = integer(s["unseen"], "unseen", 0, LIMITS["sentences"])
    s["fit_from"] = real_number(s["fit_from"], "fit_from")
    if not 0.0 <= s["fit_from"] < 1.0:
        raise FlowlabInputError(f"fit_from must lie in [0, 1), got {s['fit_from']!r}")
    trained = settings_with_defaults(int(coords["vocab"].min()), **{k: s[k] for k in (
        "steps1", "steps2", "method", "stage2_loss", "init", "init_scale")})
    s.update({k: trained[k] for k in ("steps1", "steps2", "init_scale")})
    k_max, n_max = float(coords["vocab"].max()), float(coords["sentences"].max())
    per_cell = 0.2 + 1.5e-7 * (s["steps1"] * k_max**3 + s["steps2"] * n_max * k_max)
    return SweepDefinition(system="ntp_order", dims=("vocab", "sentences", "seed"), coords=coords,
                           variables=VARIABLES, settings=s, cell=cell, setup=setup, seconds_per_cell=per_cell,
                           tile=tile or (1, 1, 4))
