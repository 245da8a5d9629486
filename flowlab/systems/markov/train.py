"""Training checks: does real training land where the flow analysis predicts?

SGD on the canonical model ``ewb`` (:mod:`flowlab.systems.markov.sgd`) from a named initialisation
(``standard``, or ``guideline`` from :mod:`flowlab.systems.markov.guide`), the agreement table of
predicted against reached basins, and the paper's Figure 4 experiment (with the single-layer PyTorch
transformer of :mod:`flowlab.systems.markov.transformer`, imported only when asked for: this module
needs NumPy alone).
"""

from __future__ import annotations

import numpy as np

from flowlab.engine.checks import FlowlabInputError, integer
from flowlab.systems.markov.chain import MarkovChain
from flowlab.systems.markov.defaults import CANONICAL_INITS
from flowlab.systems.markov.guide import guide
from flowlab.systems.markov.sgd import (
    ENDED_TOLERANCE,
    PARAMS,
    TrainResult,
    chain_levels,
    ewb_point,
    gap_closed,
    sgd_canonical,
    standard_init,
)

#: Initialisations of the canonical model: ``standard`` draws e, w ~ N(0, STANDARD_SIGMA^2), b = 0.
INITS = CANONICAL_INITS


def canonical_init(chain: MarkovChain, init, seed: int = 0) -> tuple[str, np.ndarray]:
    """(name, theta0) for ``init`` = 'standard', 'guideline', or a point {e, w, b} / (e, w, b)."""
    if isinstance(init, str):
        if init == "standard":
            return init, standard_init(seed)
        if init == "guideline":
            p = guide(chain)["point"]
            return init, np.array([p["e"], p["w"], p["b"]])
        raise FlowlabInputError(f"unknown initialisation {init!r}; choose one of {', '.join(INITS)} or give a point")
    if isinstance(init, dict):
        unknown = set(init) - set(PARAMS)
        if unknown or not {"e", "w"} <= set(init):
            raise FlowlabInputError(f"a point of ewb needs e and w (and optionally b), got {sorted(init)}")
        theta = ewb_point([init["e"], init["w"], init.get("b", 0.0)])
    else:
        theta = ewb_point(init)
    return "e=%g,w=%g,b=%g" % tuple(theta), theta


def train_canonical(chain: MarkovChain, init="standard", seed: int = 0, **settings) -> TrainResult:
    """:func:`sgd_canonical` from a named initialisation (``standard`` uses ``seed`` for the draw too)."""
    name, theta0 = canonical_init(chain, init, seed)
    return sgd_canonical(chain, theta0, seed=seed, init=name, **settings)


#: (p, q) pairs of the default agreement table: both sides of p + q = 1.
TABLE_CHAINS = ((0.5, 0.8), (0.9, 0.9), (0.7, 0.4), (0.1, 0.1), (0.2, 0.3), (0.3, 0.5))
#: Initialisations of the default table: the two named ones and one point on each side of w = -1/sqrt(2).
TABLE_INITS = ("standard", "guideline", {"e": 0.3, "w": -1.5, "b": 0.0}, {"e": 1.0, "w": 0.5, "b": 0.0})


def agreement_table(cases=None, *, seed: int = 0, **settings) -> list[dict]:
    """Predicted basin (flow of ``ewb``) vs where SGD on ``ewb`` ended, one row per case.

    ``cases`` is a list of (p, q, init) with init 'standard', 'guideline' or a point {e, w, b};
    by default every pair of :data:`TABLE_CHAINS` with every init of :data:`TABLE_INITS`.
    ``settings`` go to :func:`sgd_canonical`. Rows are JSON-ready.
    """
    if cases is None:
        cases = [(p, q, init) for p, q in TABLE_CHAINS for init in TABLE_INITS]
    rows = []
    for case in cases:
        try:
            p, q, init = case
        except (TypeError, ValueError):
            raise FlowlabInputError(f"a case is (p, q, init), got {case!r}") from None
        chain = MarkovChain(p, q)
        res = train_canonical(chain, init, seed, **settings)
        rows.append({
            "chain": chain.as_dict(),
            "init": res.init,
            "initial": res.initial,
            "predicted": res.predicted,
            "reached": res.reached,
            "final_loss": res.final_loss,
            "gap_closed": gap_closed(chain, res.final_loss),
            "optimal_loss": res.optimal_loss,
            "levels": res.levels,
            "final": res.final,
            "agrees": res.agrees,
            "seconds": res.seconds,
        })
    return rows


def table_text(rows: list[dict]) -> str:
    """The agreement table as aligned text."""
    head = f"{'p':>5} {'q':>5}  {'init':<22} {'predicted':<12} {'SGD reached':<12} {'final loss':>10} " \
           f"{'H':>8} {'h(pi1)':>8} {'gap closed':>10}  agrees"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['chain']['p']:>5g} {r['chain']['q']:>5g}  {r['init']:<22} {r['predicted']:<12} {r['reached']:<12} "
            f"{r['final_loss']:>10.5f} {r['optimal_loss']:>8.5f} {r['levels']['unigram']:>8.5f} "
            f"{'n/a' if r['gap_closed'] is None else format(r['gap_closed'], '.3f'):>10}  {r['agrees']}"
        )
    n = sum(r["agrees"] is True for r in rows)
    open_ = sum(r["agrees"] is None for r in rows)
    lines.append(f"{n}/{len(rows)} runs end where the flow analysis predicts"
                 + (f" ({open_} undetermined)" if open_ else "")
                 + f" (gap closed: 0 = unigram loss, 1 = bigram loss; a run ended at a level when within "
                 f"{ENDED_TOLERANCE:g} of the gap of it)")
    return "\n".join(lines) + "\n"


def summarize(runs) -> dict:
    """Mean, std and per-seed final losses of a list of runs (TrainResult or transformer dicts)."""
    finals = [r.final_loss if isinstance(r, TrainResult) else float(r["final_loss"]) for r in runs]
    seeds = [r.settings["seed"] if isinstance(r, TrainResult) else r["settings"]["seed"] for r in runs]
    return {
        "seeds": seeds,
        "final_losses": finals,
        "mean": float(np.mean(finals)),
        "std": float(np.std(finals)),
    }


def figure4(
    p: float = 0.5,
    q: float = 0.8,
    *,
    seeds=(0, 1, 2),
    fast: bool = False,
    transformer: bool | None = None,
    adam: bool = True,
    quiet: bool = True,
    transformer_settings: dict | None = None,
    bar=None,
    transformer_runs: dict | None = None,
) -> dict:
    """The paper's Figure 4 experiment: runs from ``standard`` and ``guideline`` over ``seeds``.

    Returns {"chain", "canonical": {init: [TrainResult]}, "transformer": {init: [dict]} or None,
    "transformer_adam": [dict] (with ``adam`` and the transformer), "summary": JSON-ready means,
    per-seed final losses and the unigram/bigram losses}. ``transformer=None`` trains the PyTorch
    model when torch is importable. ``adam`` adds runs of the transformer from the standard
    initialisation with Adam (:data:`flowlab.systems.markov.transformer.ADAM_CHECK`): an adaptive optimiser is not a
    gradient flow, and these runs show whether it escapes the unigram plateau. ``fast`` shortens
    every run (a quick look; the tests use it). ``transformer_settings`` override settings of
    :func:`flowlab.systems.markov.transformer.train_transformer` (e.g. ``val_sequences``, ``log_every``).
    Progress: one bar per run (tqdm on stderr unless ``quiet``); ``bar(desc, total)`` replaces tqdm
    (an object with ``update(n)`` and ``close()``). ``transformer_runs``: the result of
    :func:`figure4_transformer` when it was computed elsewhere (e.g. in another process); it is used as is.
    """
    chain = MarkovChain(p, q)
    seeds = [integer(s, "seed", 0) for s in seeds]
    if not seeds:
        raise FlowlabInputError("give at least one seed")
    if bar is None:
        bar = _tqdm_bar(quiet)
    canon_settings = {"steps": 800, "log_every": 20} if fast else {}
    out: dict = {"chain": chain, "canonical": {}, "transformer": None}
    progress = bar("canonical SGD (ewb)", len(INITS) * len(seeds))
    for init in INITS:
        out["canonical"][init] = []
        for s in seeds:
            out["canonical"][init].append(train_canonical(chain, init, s, **canon_settings))
            progress.update(1)
    progress.close()
    if transformer is None:
        import importlib.util

        transformer = importlib.util.find_spec("torch") is not None
    if transformer_runs is None and transformer:
        transformer_runs = figure4_transformer(chain, seeds, fast=fast, adam=adam, settings=transformer_settings,
                                               bar=bar)
    out.update(transformer_runs or {})
    out["summary"] = _figure4_summary(chain, out, fast)
    return out


def figure4_transformer(chain: MarkovChain, seeds, *, fast: bool = False, adam: bool = True,
                        settings: dict | None = None, bar=None) -> dict:
    """The transformer runs of :func:`figure4` (JSON-ready): {"transformer": {init: [run]}, "transformer_adam": [run]}
    (the latter with ``adam``); ``settings`` override those of ``train_transformer``, ``bar`` as in :func:`figure4`."""
    from flowlab.systems.markov.transformer import ADAM_CHECK, DEFAULTS, FAST_SETTINGS

    bar = _tqdm_bar(True) if bar is None else bar
    settings = {**(FAST_SETTINGS if fast else {}), **(settings or {})}
    steps = settings.get("steps", DEFAULTS["steps"])
    runs = [(init, s, {}) for init in INITS for s in seeds] + [("standard", s, ADAM_CHECK) for s in seeds if adam]
    out: dict = {"transformer": {init: [] for init in INITS}}
    for init, s, extra in runs:
        result = _transformer_run(chain, init, s, {**settings, **extra},
                                  bar(f"transformer {init}{' (Adam)' if extra else ''}, seed {s}", steps))
        if extra:
            out.setdefault("transformer_adam", []).append(result)
        else:
            out["transformer"][init].append(result)
    return out


def _tqdm_bar(quiet: bool):
    """A ``bar(desc, total)`` factory of tqdm bars on stderr (disabled when ``quiet``)."""
    import sys

    from tqdm.auto import tqdm

    return lambda desc, total: tqdm(total=total, desc=desc, disable=quiet, file=sys.stderr, leave=False)


def _transformer_run(chain: MarkovChain, init: str, seed: int, settings: dict, progress) -> dict:
    """One transformer run with its progress bar advanced at every logged step (closed at the end)."""
    from flowlab.systems.markov.transformer import train_transformer

    done = [0]

    def advance(step):
        progress.update(step - done[0])
        done[0] = step

    try:
        return train_transformer(chain, init=init, seed=seed, progress=advance, **settings)
    finally:
        progress.close()


def _figure4_summary(chain: MarkovChain, out: dict, fast: bool) -> dict:
    """The JSON-ready summary of :func:`figure4`'s runs: per group and init, the final losses, verdicts and curves."""
    summary = {"chain": chain.as_dict(), "fast": fast, "optimal_loss": chain.entropy_rate,
               "levels": chain_levels(chain), "canonical": {}, "transformer": None}
    for init, runs in out["canonical"].items():
        summary["canonical"][init] = {
            **summarize(runs), "settings": runs[0].settings, "initial": [r.initial for r in runs],
            "predicted": [r.predicted for r in runs], "reached": [r.reached for r in runs],
            "agrees": [r.agrees for r in runs],
            "curves": {"steps": runs[0].steps.tolist(), "loss": [r.loss.tolist() for r in runs]},
        }

    if out["transformer"] is not None:
        summary["transformer"] = {init: _transformer_summary(runs) for init, runs in out["transformer"].items()}
    if out.get("transformer_adam"):
        summary["transformer_adam"] = _transformer_summary(out["transformer_adam"])
    agrees = [a for group in ("canonical", "transformer") for r in (summary[group] or {}).values() for a in r["agrees"]]
    summary["status"] = "completed"
    summary["message"] = (f"{sum(a is True for a in agrees)} of {len(agrees)} runs end where the flow analysis "
                          f"predicts ({sum(a is None for a in agrees)} undetermined)")
    return summary


def _transformer_summary(runs: list[dict]) -> dict:
    """The Figure 4 summary of transformer runs (dicts of :func:`flowlab.systems.markov.transformer.train_transformer`)."""
    return {
        **summarize(runs), "settings": runs[0]["settings"],
        "predicted": [r["predicted"] for r in runs], "reached": [r["reached"] for r in runs],
        "agrees": [r["agrees"] for r in runs],
        "rank_one_fraction_final": {m: [r["rank_one_fraction"][m][-1] for r in runs] for m in ("W_V", "W_1")},
        "curves": {"steps": runs[0]["steps"], "loss": [r["losses"] for r in runs],
                   "rank_one_fraction": [r["rank_one_fraction"] for r in runs]},
    }
