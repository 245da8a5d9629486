"""Algorithm 1 of the ``ntp_order`` system, **as reconstructed** (MODELS.md §7).

Stage 1: normalised gradient descent W ← W − η₁ ∇L₀/‖∇L₀‖_F on the collocation loss L₀(W_ov).
Stage 2: W_ov fixed at its stage-1 value, normalised gradient descent W ← W − η₂ ∇L/‖∇L‖_F on
W_kq. Plain gradient descent (W ← W − η∇L) and gradient flow (dW/dt = −∇L, integrated by
``scipy.integrate.solve_ivp`` over t ∈ [0, steps·η], sampled at steps + 1 equally spaced times)
are options for comparison.

Every choice the public sources do not pin down is an option with a stated default (DEFAULTS):

- ``stage2_loss`` = ``"ce"``: the model's next-token cross-entropy with W_ov fixed; ``"attention"``
  is the cross-entropy of the attention on the optimal token (a reviewer notes the paper's stage-2
  loss differs in form from its Eq. 1; its exact form is not public);
- ``init`` = ``"gaussian"`` with ``init_scale`` = 0.01: W_ov and W_kq drawn i.i.d. N(0, 0.01²)
  (a small initialisation; ``"zero"`` starts at 0, where stage 1 moves exactly along W_ov*);
- ``lr1`` = 0.2/√d and ``lr2`` = 0.05/√d (the quoted experiment; d = K);
- ``steps1`` = 1000, ``steps2`` = 20000 iterations (the paper's counts are not public; with η₂ =
  0.05/√d the attention direction is still far from W_kq* after 1000 iterations, 1 − cos ≈ 0.1
  on the default data, and needs about 10⁴ to enter its asymptotic regime, so stage 2 runs longer).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from flowlab.engine.checks import integer, real_number
from flowlab.engine.errors import FlowlabInputError
from flowlab.systems.ntp_order import model

METHODS = ("normalized", "gd", "flow")
INITS = ("gaussian", "zero")
DEFAULTS = {"method": "normalized", "steps1": 1000, "steps2": 20000, "lr1": None, "lr2": None,
            "init": "gaussian", "init_scale": 0.01, "stage2_loss": "ce", "seed": 0}
#: The quoted experiment's step sizes, as multiples of 1/√d.
LR1_SCALE, LR2_SCALE = 0.2, 0.05


def direction_error(W: np.ndarray, target: np.ndarray) -> float:
    """1 − cos(W, W*) computed as ½‖W/‖W‖ − W*/‖W*‖‖² (no cancellation near 1); 1.0 if W = 0."""
    nw = np.linalg.norm(W)
    if nw == 0.0:
        return 1.0
    return float(0.5 * np.sum((W / nw - target / np.linalg.norm(target)) ** 2))


@dataclass(frozen=True)
class StageTrace:
    """One stage: ``t`` (iterations, or times for the flow), ``loss``, ``norm`` ‖W_t‖_F and
    ``dir_error`` 1 − cos(W_t, W*) at every recorded point; ``floor`` is the loss's infimum used by
    the rate fit (0 for L₀ and the attention loss; all attention on x* for ``ce``)."""

    name: str
    method: str
    lr: float
    t: np.ndarray
    loss: np.ndarray
    norm: np.ndarray
    dir_error: np.ndarray | None
    W: np.ndarray
    floor: float
    status: str
    message: str


def _normalized_or_gd(fn, W0, steps, lr, method, target, bar):
    W = W0.copy()
    loss, norm, err = [], [], []
    status, message = "completed", f"{steps} iterations"
    for k in range(steps + 1):
        value, grad = fn(W)
        loss.append(value)
        norm.append(np.linalg.norm(W))
        err.append(direction_error(W, target) if target is not None else np.nan)
        if k == steps:
            break
        gnorm = np.linalg.norm(grad)
        if gnorm == 0.0:
            status, message = "stationary", f"zero gradient at iteration {k}: stopped"
            break
        W = W - lr * (grad / gnorm if method == "normalized" else grad)
        if bar is not None:
            bar.update(1)
    return W, np.arange(len(loss), dtype=np.float64), loss, norm, err, status, message


def _flow(fn, W0, steps, lr, target):
    from scipy.integrate import solve_ivp

    shape = W0.shape
    times = np.linspace(0.0, steps * lr, steps + 1)
    sol = solve_ivp(lambda _t, w: -fn(w.reshape(shape))[1].ravel(), (0.0, times[-1]), W0.ravel(),
                    t_eval=times, rtol=1e-9, atol=1e-12)
    if not sol.success:
        status, message = "failed", f"solve_ivp: {sol.message}"
    else:
        status, message = "completed", f"gradient flow to t = {times[-1]:g} ({sol.nfev} evaluations)"
    Ws = sol.y.T.reshape(-1, *shape)
    loss = [fn(W)[0] for W in Ws]
    norm = [np.linalg.norm(W) for W in Ws]
    err = [direction_error(W, target) if target is not None else np.nan for W in Ws]
    return Ws[-1], sol.t, loss, norm, err, status, message


def run_stage(name, fn, W0, *, steps, lr, method, target=None, floor=0.0, quiet=True) -> StageTrace:
    """Minimise ``fn(W) -> (loss, grad)`` from W0 by ``method`` and record the trace."""
    if method not in METHODS:
        raise FlowlabInputError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    bar = None
    if not quiet and method != "flow":
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"ntp_order {name}", file=sys.stderr, unit="it", leave=False)
    try:
        if method == "flow":
            out = _flow(fn, W0, steps, lr, target)
        else:
            out = _normalized_or_gd(fn, W0, steps, lr, method, target, bar)
    finally:
        if bar is not None:
            bar.close()
    W, t, loss, norm, err, status, message = out
    dir_err = np.asarray(err) if target is not None else None
    return StageTrace(name, method, lr, np.asarray(t, dtype=np.float64), np.asarray(loss), np.asarray(norm),
                      dir_err, W, float(floor), status, message)


@dataclass(frozen=True)
class TwoStageRun:
    """Both stages of Algorithm 1 (reconstructed) and the settings used."""

    settings: dict
    stage1: StageTrace
    stage2: StageTrace
    status: str
    message: str


#: Largest step size and init scale: beyond, weights grow past what float64 logits can hold.
MAX_SCALE = 1e6


def settings_with_defaults(K: int, **options) -> dict:
    """DEFAULTS overridden by ``options`` (validated), with the step sizes resolved for d = K."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise FlowlabInputError(f"unknown training options {unknown}; allowed: {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    if s["method"] not in METHODS:
        raise FlowlabInputError(f"unknown method {s['method']!r}: use one of {', '.join(METHODS)}")
    if s["init"] not in INITS:
        raise FlowlabInputError(f"unknown init {s['init']!r}: use one of {', '.join(INITS)}")
    if s["stage2_loss"] not in model.STAGE2_LOSSES:
        raise FlowlabInputError(f"unknown stage2_loss {s['stage2_loss']!r}: use one of {', '.join(model.STAGE2_LOSSES)}")
    for k in ("steps1", "steps2"):
        s[k] = integer(s[k], k, 1, 1_000_000)
    s["seed"] = integer(s["seed"], "seed", 0, None)
    s["lr1"] = LR1_SCALE / np.sqrt(K) if s["lr1"] is None else real_number(s["lr1"], "lr1")
    s["lr2"] = LR2_SCALE / np.sqrt(K) if s["lr2"] is None else real_number(s["lr2"], "lr2")
    s["init_scale"] = real_number(s["init_scale"], "init_scale")
    if not (0 < s["lr1"] <= MAX_SCALE and 0 < s["lr2"] <= MAX_SCALE and 0 <= s["init_scale"] <= MAX_SCALE):
        raise FlowlabInputError(f"the step sizes must lie in (0, {MAX_SCALE:g}] and init_scale in [0, {MAX_SCALE:g}] "
                                f"(larger ones overflow float64), got lr1 = {s['lr1']!r}, lr2 = {s['lr2']!r}, "
                                f"init_scale = {s['init_scale']!r}")
    return s


def train_two_stage(data, targets=None, *, quiet: bool = True, **options) -> TwoStageRun:
    """Algorithm 1 (reconstructed) on ``data``; ``targets`` (W_ov*, W_kq*) give the directional errors.

    Options and defaults: DEFAULTS (module docstring).
    """
    K = data.vocab
    s = settings_with_defaults(K, **options)
    rng = np.random.default_rng(s["seed"])
    scale = s["init_scale"] if s["init"] == "gaussian" else 0.0
    W_ov0, W_kq0 = scale * rng.standard_normal((K, K)), scale * rng.standard_normal((K, K))
    t_ov, t_kq = (None, None) if targets is None else targets
    stage1 = run_stage("stage 1 (W_ov)", lambda W: model.collocation_loss(W, data.collocation), W_ov0,
                       steps=s["steps1"], lr=s["lr1"], method=s["method"], target=t_ov, quiet=quiet)
    W_ov = stage1.W
    batch = model.make_batch(data.sentences, data.labels("train"), data.optima("train"), K)
    kind = s["stage2_loss"]

    def stage2_fn(W):
        value, _, grad = model.loss_and_grads(W_ov, W, batch, kind=kind, need_ov=False)
        return value, grad

    stage2 = run_stage("stage 2 (W_kq)", stage2_fn, W_kq0, steps=s["steps2"], lr=s["lr2"], method=s["method"],
                       target=t_kq, floor=model.loss_floor(W_ov, batch, kind), quiet=quiet)
    ok = stage1.status == stage2.status == "completed"
    return TwoStageRun(s, stage1, stage2, "completed" if ok else "failed",
                       f"stage 1: {stage1.message}; stage 2: {stage2.message}")
