"""Training checks: does real training land where the flow analysis predicts?

The canonical model ``ewb`` (MODELS.md section 3, bias free) is trained here by mini-batch SGD
(optionally with momentum) on sequences sampled from the chain, with hand-derived gradients of
the per-position binary cross-entropy: position n of a sequence predicts x_{n+1} from x_n with
the logit

    f(e, w, b; x) = e^2 (1 + 2 w|w|) x - e^2/2 + b.

Every sequence starts from the stationary law, so the mini-batch loss is an unbiased estimate of
the exact expected loss L(theta) that :class:`flowlab.numeric.NumericModel` evaluates; the loss
this module *reports* is always that exact L at the logged parameters, never a noisy batch value.

The verdict of a run (``sgd_ended``, :func:`ended_basin`) is ``global`` when the final loss is
within a tolerance tau = :data:`ENDED_TOLERANCE` (h(pi1) - H) of the bigram loss H, ``local`` when
it is within tau of the unigram loss h(pi1), and ``undetermined`` otherwise (a run still between
the two levels, above the unigram loss, or whose loss is too uncertain to tell); for ``ewb`` the
loss is the exact expected loss, so its only uncertainty is float64 rounding. It is compared with
the basin the gradient flow of ``ewb`` predicts from the same initial point (``predicted``, from
:func:`flowlab.flow.gradient_flow`), giving ``agrees`` (None when either side is undetermined).

:func:`guide` turns the basin analysis of ``ew`` into a concrete initialisation (the
``guideline`` init), with the reasoning. The single-layer PyTorch transformer lives in
:mod:`flowlab.transformer` (imported only when asked for: this module needs NumPy alone).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ._checks import FlowlabInputError, finite_array, integer, real_number
from ._defaults import CANONICAL_DEFAULTS, CANONICAL_INITS, GUIDE_DEFAULTS, TRAINING_LIMITS
from .markov import MarkovChain

#: The model SGD trains (bias free).
MODEL = "ewb"
PARAMS = ("e", "w", "b")
#: Initialisations of the canonical model: ``standard`` draws e, w ~ N(0, STANDARD_SIGMA^2), b = 0.
INITS = CANONICAL_INITS
STANDARD_SIGMA = 0.01

#: Defaults of :func:`sgd_canonical` and of :func:`guide` (shared with the CLI through flowlab._defaults).
DEFAULTS = CANONICAL_DEFAULTS
#: The separatrix level of ``ew`` in closed form (MODELS.md section 3), quoted next to the computed one.
SEPARATRIX_CLOSED_FORM = -(1.0 + math.log(2.0)) / 2.0
#: A run ended at a level (H or h(pi1)) when its final loss is within this fraction of the gap h(pi1) - H of it.
ENDED_TOLERANCE = 0.1
#: Standard errors of a held-out loss estimate taken as its uncertainty in :func:`ended_basin`.
ENDED_Z = 3.0
#: Relative float64 rounding of a computed loss (the least uncertainty :func:`ended_basin` assumes).
ROUNDING = 1e-13
#: Steps whose sequences are sampled in one call (one seed drawn per chunk: part of what a seed means).
_SAMPLE_CHUNK_STEPS = 64
#: guide() answers by (p, q, grid, extent, margin, e_min): the basin grid is computed once per process.
_GUIDE_CACHE: dict = {}


# ------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class TrainResult:
    """One SGD run of ``ewb``: logged trajectory, exact losses and the verdict against the flow.

    ``steps`` are the logged step indices (0 = the initial point), ``loss`` the exact expected
    loss at the logged parameters ``theta`` (rows in ``params`` order), ``batch_loss`` the mean
    mini-batch loss since the previous log (the noisy quantity SGD saw).
    """

    chain: MarkovChain
    init: str
    steps: np.ndarray
    loss: np.ndarray
    theta: np.ndarray
    batch_loss: np.ndarray
    predicted: str
    prediction_message: str
    settings: dict
    seconds: float
    params: tuple[str, ...] = PARAMS
    model: str = MODEL
    extra: dict = field(default_factory=dict)

    @property
    def initial(self) -> dict[str, float]:
        return dict(zip(self.params, self.theta[0].tolist()))

    @property
    def final(self) -> dict[str, float]:
        return dict(zip(self.params, self.theta[-1].tolist()))

    @property
    def final_loss(self) -> float:
        return float(self.loss[-1])

    @property
    def unigram_loss(self) -> float:
        return self.chain.unigram_loss

    @property
    def bigram_loss(self) -> float:
        return self.chain.entropy_rate

    @property
    def sgd_ended(self) -> str:
        return ended_basin(self.chain, self.final_loss)

    @property
    def agrees(self) -> bool | None:
        return agreement(self.predicted, self.sgd_ended)

    def as_dict(self, trajectory: bool = True) -> dict:
        out = {
            "model": self.model,
            "chain": self.chain.as_dict(),
            "params": list(self.params),
            "init": self.init,
            "initial": self.initial,
            "final": self.final,
            "initial_loss": float(self.loss[0]),
            "final_loss": self.final_loss,
            "unigram_loss": self.unigram_loss,
            "bigram_loss": self.bigram_loss,
            "final_minus_bigram": self.final_loss - self.bigram_loss,
            "final_minus_unigram": self.final_loss - self.unigram_loss,
            "gap_closed": gap_closed(self.chain, self.final_loss),
            "predicted": self.predicted,
            "prediction_message": self.prediction_message,
            "sgd_ended": self.sgd_ended,
            "agrees": self.agrees,
            "settings": dict(self.settings),
            "seconds": self.seconds,
            **self.extra,
        }
        if trajectory:
            out["steps"] = self.steps.tolist()
            out["loss"] = self.loss.tolist()
            out["batch_loss"] = self.batch_loss.tolist()
            out["trajectory"] = {name: self.theta[:, i].tolist() for i, name in enumerate(self.params)}
        return out


def gap_closed(chain: MarkovChain, loss: float) -> float | None:
    """(h(pi1) - loss) / (h(pi1) - H): 0 at the unigram loss, 1 at the bigram loss (None when p + q = 1)."""
    if chain.degenerate:
        return None
    return (chain.unigram_loss - loss) / (chain.unigram_loss - chain.entropy_rate)


def ended_basin(chain: MarkovChain, final_loss: float, uncertainty: float = 0.0, *,
                tolerance: float = ENDED_TOLERANCE) -> str:
    """Where a run with this final loss ended: 'global', 'local' or 'undetermined'.

    With the gap G = h(pi1) - H and tau = ``tolerance`` * G, the final loss L is known up to
    ``uncertainty`` u (0 for the exact expected loss of ``ewb``; :data:`ENDED_Z` standard errors
    for a held-out estimate), never less than float64 rounding (``ROUNDING`` * max(1, L)):

    * 'global' when the whole interval [L - u, L + u] lies below H + tau;
    * 'local' when it lies within tau of h(pi1);
    * 'undetermined' otherwise: between the levels (e.g. 51% of the gap closed), above the
      unigram loss, or too uncertain to tell.

    ``tolerance`` must lie in (0, 1/2), so the two labels exclude each other. For ``ewb`` a
    'global' end is also where the gradient flow continued from the final point goes: its loss is
    below h(pi1), the only non-global critical value, and the loss never increases along the flow.
    'local' says the run ended at the unigram level (not that it could never leave it). For
    p + q = 1 the two losses coincide and every end is 'global' (vacuously).
    """
    final_loss = real_number(final_loss, "final_loss")
    uncertainty = real_number(uncertainty, "uncertainty")
    tolerance = real_number(tolerance, "tolerance")
    if uncertainty < 0 or not 0 < tolerance < 0.5:
        raise FlowlabInputError(f"need uncertainty >= 0 and 0 < tolerance < 1/2, got {uncertainty}, {tolerance}")
    if chain.degenerate:
        return "global"
    H, h = chain.entropy_rate, chain.unigram_loss
    tau = tolerance * (h - H)
    u = max(uncertainty, ROUNDING * max(1.0, abs(final_loss)))
    if final_loss + u <= H + tau:
        return "global"
    if abs(final_loss - h) + u <= tau:
        return "local"
    return "undetermined"


def agreement(predicted: str, ended: str) -> bool | None:
    """True/False when both the prediction and the end are labels; None when either is undetermined."""
    if "undetermined" in (predicted, ended):
        return None
    return predicted == ended


# ---------------------------------------------------------------- mini-batch loss/gradient
def _transition_counts(seqs) -> np.ndarray:
    """counts[x, y] = number of positions n < N with (x_n, x_{n+1}) = (x, y), over all sequences."""
    seqs = np.asarray(seqs)
    if seqs.ndim != 2 or seqs.shape[1] < 2:
        raise FlowlabInputError(f"sequences must have shape (batch, length >= 2), got {seqs.shape}")
    if not np.all((seqs == 0) | (seqs == 1)):
        raise FlowlabInputError("sequences must contain only the tokens 0 and 1")
    cur = seqs[:, :-1].astype(np.int64)
    nxt = seqs[:, 1:].astype(np.int64)
    return np.bincount((2 * cur + nxt).ravel(), minlength=4).reshape(2, 2).astype(np.float64)


def _logits(theta) -> tuple[float, float]:
    """(f(theta; 0), f(theta; 1)) of ``ewb``."""
    e, w, b = theta
    return -e * e / 2 + b, e * e * (1 + 2 * w * abs(w)) - e * e / 2 + b


def _loss_grad_from_counts(theta, counts) -> tuple[float, np.ndarray]:
    """Mean BCE over the counted positions and its exact gradient in (e, w, b)."""
    e, w, _ = theta
    total = counts.sum()
    f = np.array(_logits(theta))
    # CE(y, sigma(f)) = softplus(f) - y f, in a stable form
    softplus = np.logaddexp(0.0, f)
    n_x = counts.sum(axis=1)  # positions with current token x
    n_x1 = counts[:, 1]  # ... followed by a 1
    loss = float(np.sum(n_x * softplus - n_x1 * f) / total)
    sig = 0.5 * (1.0 + np.tanh(0.5 * f))  # sigma(f), stable for any f
    g = (n_x * sig - n_x1) / total  # dL/df_x
    # df_x/de = e (2 (1 + 2 w|w|) x - 1), df_x/dw = 4 e^2 |w| x, df_x/db = 1
    d_e = e * (2 * (1 + 2 * w * abs(w)) * np.array([0.0, 1.0]) - 1.0)
    d_w = np.array([0.0, 4 * e * e * abs(w)])
    grad = np.array([np.dot(g, d_e), np.dot(g, d_w), g.sum()])
    return loss, grad


def minibatch_loss(theta, seqs) -> float:
    """Mean next-token BCE of ``ewb`` over positions 1..N-1 of every sequence (rows of ``seqs``)."""
    theta = _point(theta)
    return _loss_grad_from_counts(theta, _transition_counts(seqs))[0]


def minibatch_gradient(theta, seqs) -> np.ndarray:
    """The exact gradient in (e, w, b) of :func:`minibatch_loss` (hand-derived)."""
    theta = _point(theta)
    return _loss_grad_from_counts(theta, _transition_counts(seqs))[1]


def _point(theta) -> np.ndarray:
    theta = finite_array(theta, "theta")
    if theta.shape != (3,):
        raise FlowlabInputError(f"a point of model ewb has 3 coordinates (e, w, b), got shape {theta.shape}")
    return theta


# ------------------------------------------------------------------------------ checks


def _seed(value) -> int:
    return integer(value, "seed", 0)


#: Cost of :func:`sgd_canonical` per sampled token (measured: the default 3000 steps x 32 x 64 tokens in
#: about 3 s on 2 shared cores) and bytes per token of one sampling chunk (float64 uniforms + int8 tokens).
SGD_SECONDS_PER_TOKEN = 5e-7
SGD_BYTES_PER_TOKEN = 9


def refuse_costly(memory: float, seconds: float, sizes: dict, what: str) -> None:
    """Refuse, before any work, a run estimated to need more than TRAINING_LIMITS (memory or time)."""
    max_bytes, max_seconds = TRAINING_LIMITS["bytes"], TRAINING_LIMITS["seconds"]
    shown = ", ".join(f"{k}={v}" for k, v in sizes.items())
    if memory > max_bytes:
        raise FlowlabInputError(f"this run would need about {memory / 2**30:.3g} GiB of memory ({shown}); "
                                f"the limit is {max_bytes / 2**30:g} GiB: lower {what}")
    if seconds > max_seconds:
        raise FlowlabInputError(f"this run would take about {seconds:.3g} s ({shown}); the limit is "
                                f"{max_seconds:g} s: lower {what}")


def _settings(steps, batch, seq_len, lr, momentum, seed, log_every) -> dict:
    out = {
        "steps": integer(steps, "steps"),
        "batch": integer(batch, "batch"),
        "seq_len": integer(seq_len, "seq_len", 2),
        "lr": real_number(lr, "lr"),
        "momentum": real_number(momentum, "momentum"),
        "seed": _seed(seed),
        "log_every": integer(log_every, "log_every"),
    }
    if out["lr"] <= 0:
        raise FlowlabInputError(f"lr must be positive, got {lr}")
    if not 0.0 <= out["momentum"] < 1.0:
        raise FlowlabInputError(f"momentum must lie in [0, 1), got {momentum}")
    sizes = {k: out[k] for k in ("steps", "batch", "seq_len")}
    tokens = sizes["batch"] * sizes["seq_len"]
    refuse_costly(SGD_BYTES_PER_TOKEN * tokens * min(sizes["steps"], _SAMPLE_CHUNK_STEPS),
                  SGD_SECONDS_PER_TOKEN * tokens * sizes["steps"], sizes, "steps, batch or seq_len")
    return out


# ---------------------------------------------------------------------------------- SGD
def predict(chain: MarkovChain, theta0, *, t_max: float = 1e4) -> tuple[str, str]:
    """(basin, message): where the gradient flow of ``ewb`` from ``theta0`` goes."""
    from .flow import gradient_flow
    from .models import get_model

    res = gradient_flow(get_model(MODEL), chain, _point(theta0), t_max=t_max, allow_degenerate=True)
    return res.reached, res.message


def sgd_canonical(
    chain: MarkovChain,
    theta0,
    *,
    steps: int = DEFAULTS["steps"],
    batch: int = DEFAULTS["batch"],
    seq_len: int = DEFAULTS["seq_len"],
    lr: float = DEFAULTS["lr"],
    momentum: float = DEFAULTS["momentum"],
    seed: int = 0,
    log_every: int = DEFAULTS["log_every"],
    init: str | None = None,
    predicted: tuple[str, str] | None = None,
) -> TrainResult:
    """Mini-batch SGD on ``ewb`` from ``theta0`` = (e, w, b) on sequences sampled from ``chain``.

    Each step samples ``batch`` fresh sequences of length ``seq_len`` (started from pi; seeded by
    ``seed``), takes the gradient of the mean BCE over positions 1..N-1 and updates
    ``v <- momentum v + g; theta <- theta - lr v``. The exact expected loss is logged every
    ``log_every`` steps and at the end. ``init`` names the initialisation in the result (default:
    the point). ``predicted`` = (basin, message) skips the flow when the caller already has it. A
    run whose parameters stop being finite raises :class:`FlowlabInputError` (lower ``lr``).

    >>> chain = MarkovChain(0.5, 0.8)
    >>> r = sgd_canonical(chain, [0.01, 0.01, 0.0], steps=300)
    >>> r.predicted, r.sgd_ended, abs(r.final_loss - chain.unigram_loss) < 5e-3
    ('local', 'local', True)
    """
    from .models import get_model
    from .numeric import NumericModel

    if not isinstance(chain, MarkovChain):
        raise FlowlabInputError(f"chain must be a MarkovChain, got {type(chain).__name__}")
    theta = _point(theta0).copy()
    s = _settings(steps, batch, seq_len, lr, momentum, seed, log_every)
    if init is None:
        init = "e=%g,w=%g,b=%g" % tuple(theta)
    t0 = time.perf_counter()
    if predicted is None:
        predicted = predict(chain, theta)
    rng = np.random.default_rng(s["seed"])
    velocity = np.zeros(3)
    logged_steps, logged_theta, logged_batch = [0], [theta.copy()], [math.nan]
    running, n_running = 0.0, 0
    data = None
    for step in range(1, s["steps"] + 1):
        k = (step - 1) % _SAMPLE_CHUNK_STEPS
        if k == 0:
            n = min(_SAMPLE_CHUNK_STEPS, s["steps"] - step + 1)
            data = chain.sample(n * s["batch"], s["seq_len"], int(rng.integers(2**63 - 1)))
        seqs = data[k * s["batch"] : (k + 1) * s["batch"]]
        with np.errstate(over="ignore", invalid="ignore"):  # a divergence is reported just below
            loss, grad = _loss_grad_from_counts(theta, _transition_counts(seqs))
            velocity = s["momentum"] * velocity + grad
            theta = theta - s["lr"] * velocity
        if not (np.all(np.isfinite(theta)) and math.isfinite(loss)):
            raise FlowlabInputError(
                f"SGD diverged at step {step} (lr={s['lr']:g}, momentum={s['momentum']:g}): the parameters "
                "are no longer finite; lower the learning rate"
            )
        running += loss
        n_running += 1
        if step % s["log_every"] == 0 or step == s["steps"]:
            logged_steps.append(step)
            logged_theta.append(theta.copy())
            logged_batch.append(running / n_running)
            running, n_running = 0.0, 0
    traj = np.array(logged_theta)
    exact = NumericModel(get_model(MODEL), chain).loss(traj)
    batch_loss = np.array(logged_batch)
    batch_loss[0] = exact[0]  # no batch before the first step: the exact value
    return TrainResult(
        chain=chain,
        init=init,
        steps=np.array(logged_steps),
        loss=np.asarray(exact, dtype=np.float64),
        theta=traj,
        batch_loss=batch_loss,
        predicted=predicted[0],
        prediction_message=predicted[1],
        settings={**s, "optimizer": "sgd" + ("+momentum" if s["momentum"] else "")},
        seconds=time.perf_counter() - t0,
    )


def standard_init(seed: int, sigma: float = STANDARD_SIGMA) -> np.ndarray:
    """The standard initialisation of ``ewb``: e, w ~ N(0, sigma^2) (seeded), b = 0."""
    rng = np.random.default_rng(_seed(seed))
    e, w = rng.normal(0.0, real_number(sigma, "sigma"), size=2)
    return np.array([e, w, 0.0])


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
        theta = _point([init["e"], init["w"], init.get("b", 0.0)])
    else:
        theta = _point(init)
    return "e=%g,w=%g,b=%g" % tuple(theta), theta


def train_canonical(chain: MarkovChain, init="standard", seed: int = 0, **settings) -> TrainResult:
    """:func:`sgd_canonical` from a named initialisation (``standard`` uses ``seed`` for the draw too)."""
    name, theta0 = canonical_init(chain, init, seed)
    return sgd_canonical(chain, theta0, seed=seed, init=name, **settings)


# ------------------------------------------------------------------------------- guide
def _nearest_distances(points, others, chunk: int = 2048) -> np.ndarray:
    """For each row of ``points``, the distance to the nearest row of ``others`` (inf if none)."""
    if len(others) == 0:
        return np.full(len(points), np.inf)
    out = np.empty(len(points))
    for i in range(0, len(points), chunk):
        diff = points[i : i + chunk, None, :] - others[None, :, :]
        out[i : i + chunk] = np.sqrt(np.min(np.sum(diff * diff, axis=-1), axis=1))
    return out


def guide(
    chain: MarkovChain,
    *,
    grid: int = GUIDE_DEFAULTS["grid"],
    extent: float = GUIDE_DEFAULTS["extent"],
    margin: float = GUIDE_DEFAULTS["margin"],
    e_min: float = GUIDE_DEFAULTS["e_min"],
) -> dict:
    """A recommended initialisation for ``chain`` from the basin analysis of ``ew``, with the reasoning.

    A basin grid of ``ew`` (flow method) over [-extent, extent]^2 is computed; the point is the
    grid point labelled global with e >= ``e_min`` (away from the critical line e = 0, where the
    gradient vanishes and training would crawl) whose distance to every non-global or
    undetermined grid label is at least ``margin``, with the smallest norm (ties: the larger
    distance, then the larger w). With b = 0 it is checked by the gradient flow of ``ewb`` (``predicted``) and
    against the conserved energy (``in_I_star``). JSON-ready.

    >>> g = guide(MarkovChain(0.5, 0.8))
    >>> g["predicted"], g["in_I_star"], g["point"]["w"] < -2 ** -0.5
    ('global', True, True)
    """
    if not isinstance(chain, MarkovChain):
        raise FlowlabInputError(f"chain must be a MarkovChain, got {type(chain).__name__}")
    chain.require_nondegenerate("a guideline initialisation (every initialisation reaches the bigram model)")
    grid = integer(grid, "grid", 4)
    extent = real_number(extent, "extent")
    margin = real_number(margin, "margin")
    e_min = real_number(e_min, "e_min")
    if extent <= 0 or margin < 0 or not 0 <= e_min < extent:
        raise FlowlabInputError(f"need extent > 0, margin >= 0 and 0 <= e_min < extent; got {extent}, {margin}, {e_min}")
    key = (chain.p, chain.q, grid, extent, margin, e_min)
    if key not in _GUIDE_CACHE:
        _GUIDE_CACHE[key] = _guide(chain, grid, extent, margin, e_min)
    return copy.deepcopy(_GUIDE_CACHE[key])


def _guide(chain: MarkovChain, grid: int, extent: float, margin: float, e_min: float) -> dict:
    from .basins import GLOBAL, basin_grid
    from .models import get_model
    from .numeric import NumericModel

    t0 = time.perf_counter()
    ew = get_model("ew")
    bg = basin_grid(ew, chain, {"e": (-extent, extent), "w": (-extent, extent)}, grid)
    mesh = np.stack(np.meshgrid(bg.axes["e"], bg.axes["w"], indexing="ij"), axis=-1).reshape(-1, 2)
    labels = bg.label.reshape(-1)
    good = labels == GLOBAL
    dist = np.full(len(mesh), 0.0)
    dist[good] = _nearest_distances(mesh[good], mesh[~good])
    # w = 0 is invariant and E is undefined there: the point is taken off it
    cand = good & (mesh[:, 0] >= e_min - 1e-12) & (dist >= margin - 1e-9) & (np.abs(mesh[:, 1]) > 1e-12)
    relaxed = not np.any(cand)
    if relaxed:  # no point meets the margin: the one farthest from every non-global label
        cand = good & (mesh[:, 0] > 0) & (np.abs(mesh[:, 1]) > 1e-12)
        if not np.any(cand):
            raise FlowlabInputError(f"no grid point of [-{extent}, {extent}]^2 is labelled global; enlarge extent")
    idx = np.flatnonzero(cand)
    norms = np.round(np.linalg.norm(mesh[idx], axis=1), 12)
    # smallest norm, then farthest from non-global labels, then the larger w (e.g. w = 0.1 before -0.1)
    order = np.lexsort((-mesh[idx, 1], -dist[idx], norms)) if not relaxed else np.argsort(-dist[idx])
    best = idx[order[0]]
    e, w = (float(round(v, 10)) for v in mesh[best])
    point = {"e": e, "w": w, "b": 0.0}

    nm = NumericModel(ew, chain)
    ref = bg.reference
    saddle = ref.saddle_points[0] if ref.saddle_points else [0.0, -(2**-0.5)]
    e_sep = float(nm.invariants(np.array(saddle))["E"])
    energy = float(nm.invariants(np.array([e, w]))["E"])
    if chain.optimal_gap < 0:  # p + q > 1
        in_star = (w < saddle[1]) or (saddle[1] < w < 0 and energy > e_sep)
        region = (
            "p + q > 1: I* = {w < -1/sqrt(2), e != 0} U {-1/sqrt(2) < w < 0, E(e, w) > E_sep}. Initialise the FFN "
            "weight negative, w < -1/sqrt(2) (so that 1 + 2w|w| < 0 and the logit gap can reach D* < 0), with an "
            "embedding e of order one; every w > 0 and every small initialisation near the origin end at the unigram model."
        )
        small = "a small initialisation near the origin (e.g. N(0, 0.02^2)) lies in I_min: it ends at the unigram loss"
    else:
        in_star = not (w < saddle[1] and energy < e_sep) and e != 0
        region = (
            "p + q < 1: I* = everything with e != 0 except I_min = {w < -1/sqrt(2), E(e, w) < E_sep}. Any w > -1/sqrt(2) "
            "works, so a small initialisation near the origin already reaches the bigram model; avoid a strongly "
            "negative FFN weight with a small embedding."
        )
        small = "a small initialisation near the origin lies in I*: it already reaches the bigram loss"
    pred, message = predict(chain, [e, w, 0.0])
    reasoning = [
        f"optimal logit gap D* = log((1-p)(1-q)/(pq)) = {chain.optimal_gap:.6g} "
        f"({'positive: p + q < 1' if chain.optimal_gap > 0 else 'negative: p + q > 1'}); "
        "model ew has D(e, w) = e^2 (1 + 2w|w|), so the global minima {D = D*} lie where 1 + 2w|w| has the sign of D*",
        "critical sets (flowlab.critical): global minima " + "; ".join(ref.global_sets)
        + " | non-global minima " + ("; ".join(ref.nonglobal_min_sets) or "none")
        + f" | saddle at (e, w) = ({saddle[0]:.6g}, {saddle[1]:.6g})",
        f"the energy E = e^2 - w^2 - sign(w) log|w| is conserved by the flow; the separatrix is its level at the "
        f"saddle, E_sep = {e_sep:.10g} (closed form -(1 + log 2)/2 = {SEPARATRIX_CLOSED_FORM:.10g})",
        f"basin grid of ew by the flow, {grid}x{grid} on [-{extent:g}, {extent:g}]^2: fractions "
        + ", ".join(f"{k} {v:.3f}" for k, v in bg.fractions().items()),
        f"chosen: the smallest-norm grid point labelled global with e >= {e_min:g} and at least {margin:g} from every "
        f"non-global or undetermined label" + (" (none met the margin: the farthest one instead)" if relaxed else "")
        + f": (e, w) = ({e:g}, {w:g}), distance {dist[best]:.3f}, E = {energy:.6g} "
        f"({'above' if energy > e_sep else 'below'} E_sep)",
        f"check: the gradient flow of ewb from (e, w, b) = ({e:g}, {w:g}, 0) reaches '{pred}' ({message})",
        small,
    ]
    return {
        "chain": chain.as_dict(),
        "regime": chain.regime,
        "region": region,
        "point": point,
        "energy": energy,
        "separatrix": e_sep,
        "separatrix_closed_form": SEPARATRIX_CLOSED_FORM,
        "in_I_star": bool(in_star),
        "distance_to_nonglobal": float(dist[best]),
        "predicted": pred,
        "prediction_message": message,
        "small_init": small,
        "reasoning": reasoning,
        "settings": {"grid": grid, "extent": extent, "margin": margin, "e_min": e_min, "relaxed": bool(relaxed)},
        "seconds": time.perf_counter() - t0,
    }


def guide_text(g: dict) -> str:
    """A human-readable rendering of :func:`guide`'s answer."""
    c = g["chain"]
    pt = g["point"]
    lines = [
        f"Guideline initialisation for p = {c['p']!r}, q = {c['q']!r} ({g['regime']})",
        f"  recommended region: {g['region']}",
        f"  initialisation:     e = {pt['e']:g}, w = {pt['w']:g}, b = {pt['b']:g}"
        f"   (flow of ewb: {g['predicted']}; in I*: {g['in_I_star']})",
        f"  small init:         {g['small_init']}",
        "  reasoning:",
    ]
    lines += [f"    - {r}" for r in g["reasoning"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- agreement table
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
            "p": chain.p,
            "q": chain.q,
            "regime": chain.regime,
            "init": res.init,
            "theta0": res.initial,
            "predicted": res.predicted,
            "sgd_ended": res.sgd_ended,
            "final_loss": res.final_loss,
            "gap_closed": gap_closed(chain, res.final_loss),
            "bigram_loss": res.bigram_loss,
            "unigram_loss": res.unigram_loss,
            "final": res.final,
            "agrees": res.agrees,
            "seconds": res.seconds,
        })
    return rows


def table_text(rows: list[dict]) -> str:
    """The agreement table as aligned text."""
    head = f"{'p':>5} {'q':>5}  {'init':<22} {'predicted':<12} {'SGD ended':<12} {'final loss':>10} " \
           f"{'H':>8} {'h(pi1)':>8} {'gap closed':>10}  agrees"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['p']:>5g} {r['q']:>5g}  {r['init']:<22} {r['predicted']:<12} {r['sgd_ended']:<12} "
            f"{r['final_loss']:>10.5f} {r['bigram_loss']:>8.5f} {r['unigram_loss']:>8.5f} "
            f"{'n/a' if r['gap_closed'] is None else format(r['gap_closed'], '.3f'):>10}  {r['agrees']}"
        )
    n = sum(r["agrees"] is True for r in rows)
    open_ = sum(r["agrees"] is None for r in rows)
    lines.append(f"{n}/{len(rows)} runs end where the flow analysis predicts"
                 + (f" ({open_} undetermined)" if open_ else "")
                 + f" (gap closed: 0 = unigram loss, 1 = bigram loss; a run ended at a level when within "
                 f"{ENDED_TOLERANCE:g} of the gap of it)")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------- figure 4
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
) -> dict:
    """The paper's Figure 4 experiment: runs from ``standard`` and ``guideline`` over ``seeds``.

    Returns {"chain", "canonical": {init: [TrainResult]}, "transformer": {init: [dict]} or None,
    "transformer_adam": [dict] (with ``adam`` and the transformer), "summary": JSON-ready means,
    per-seed final losses and the unigram/bigram losses}. ``transformer=None`` trains the PyTorch
    model when torch is importable. ``adam`` adds runs of the transformer from the standard
    initialisation with Adam (:data:`flowlab.transformer.ADAM_CHECK`): an adaptive optimiser is not a
    gradient flow, and these runs show whether it escapes the unigram plateau. ``fast`` shortens
    every run (a quick look; the tests use it).
    """
    import sys

    chain = MarkovChain(p, q)
    seeds = [_seed(s) for s in seeds]
    if not seeds:
        raise FlowlabInputError("give at least one seed")
    canon_settings = {"steps": 800, "log_every": 20} if fast else {}
    out: dict = {"chain": chain, "canonical": {}, "transformer": None}
    for init in INITS:
        out["canonical"][init] = [train_canonical(chain, init, s, **canon_settings) for s in seeds]
        if not quiet:
            print(f"canonical {init}: " + ", ".join(f"{r.final_loss:.4f}" for r in out["canonical"][init]),
                  file=sys.stderr)
    if transformer is None:
        import importlib.util

        transformer = importlib.util.find_spec("torch") is not None
    if transformer:
        from .transformer import ADAM_CHECK, FAST_SETTINGS, train_transformer

        short = FAST_SETTINGS if fast else {}
        out["transformer"] = {}
        for init in INITS:
            out["transformer"][init] = [train_transformer(chain, init=init, seed=s, **short) for s in seeds]
            if not quiet:
                print(f"transformer {init}: " + ", ".join(f"{r['final_loss']:.4f}" for r in out["transformer"][init]),
                      file=sys.stderr)
        if adam:
            out["transformer_adam"] = [train_transformer(chain, init="standard", seed=s, **{**short, **ADAM_CHECK})
                                       for s in seeds]
            if not quiet:
                print("transformer standard, Adam: " + ", ".join(f"{r['final_loss']:.4f}" for r in out["transformer_adam"]),
                      file=sys.stderr)
    summary = {"chain": chain.as_dict(), "fast": fast, "unigram_loss": chain.unigram_loss,
               "bigram_loss": chain.entropy_rate, "canonical": {}, "transformer": None}
    for init, runs in out["canonical"].items():
        summary["canonical"][init] = {
            **summarize(runs), "settings": runs[0].settings, "initial": [r.initial for r in runs],
            "predicted": [r.predicted for r in runs], "ended": [r.sgd_ended for r in runs],
            "agrees": [r.agrees for r in runs],
            "curves": {"steps": runs[0].steps.tolist(), "loss": [r.loss.tolist() for r in runs]},
        }

    def transformer_summary(runs):
        return {
            **summarize(runs), "settings": runs[0]["settings"],
            "predicted": [r["predicted"] for r in runs], "ended": [r["ended"] for r in runs],
            "agrees": [r["agrees"] for r in runs],
            "rank_one_fraction_final": {m: [r["rank_one_fraction"][m][-1] for r in runs] for m in ("W_V", "W_1")},
            "curves": {"steps": runs[0]["steps"], "loss": [r["losses"] for r in runs],
                       "rank_one_fraction": [r["rank_one_fraction"] for r in runs]},
        }

    if out["transformer"] is not None:
        summary["transformer"] = {init: transformer_summary(runs) for init, runs in out["transformer"].items()}
    if out.get("transformer_adam"):
        summary["transformer_adam"] = transformer_summary(out["transformer_adam"])
    out["summary"] = summary
    return out
