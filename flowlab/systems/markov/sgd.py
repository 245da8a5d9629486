"""SGD on the canonical model ``ewb`` and the verdict of a training run against the flow.

The canonical model ``ewb`` (MODELS.md section 3, bias free) is trained here by mini-batch SGD
(optionally with momentum) on sequences sampled from the chain, with hand-derived gradients of
the per-position binary cross-entropy: position n of a sequence predicts x_{n+1} from x_n with
the logit

    f(e, w, b; x) = e^2 (1 + 2 w|w|) x - e^2/2 + b.

Every sequence starts from the stationary law, so the mini-batch loss is an unbiased estimate of
the exact expected loss L(theta) that :class:`flowlab.systems.markov.numeric.NumericModel` evaluates; the loss
this module *reports* is always that exact L at the logged parameters, never a noisy batch value.

The verdict of a run (``reached``, :func:`ended_basin`) is ``global`` when the final loss is
within a tolerance tau = :data:`ENDED_TOLERANCE` (h(pi1) - H) of the bigram loss H (``optimal_loss``), ``local`` when
it is within tau of the unigram loss h(pi1), and ``undetermined`` otherwise (a run still between
the two levels, above the unigram loss, or whose loss is too uncertain to tell); for ``ewb`` the
loss is the exact expected loss, so its only uncertainty is float64 rounding. It is compared with
the basin the gradient flow of ``ewb`` predicts from the same initial point (``predicted``, from
:func:`flowlab.systems.markov.flow.gradient_flow`), giving ``agrees`` (None when either side is undetermined).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from flowlab.engine.checks import FlowlabInputError, finite_array, integer, real_number
from flowlab.systems.markov.chain import MarkovChain
from flowlab.systems.markov.defaults import CANONICAL_DEFAULTS, TRAINING_LIMITS

#: The model SGD trains (bias free).
MODEL = "ewb"
PARAMS = ("e", "w", "b")
#: The standard initialisation (:func:`standard_init`) draws e, w ~ N(0, STANDARD_SIGMA^2), b = 0.
STANDARD_SIGMA = 0.01
#: Defaults of :func:`sgd_canonical` (shared with the CLI through flowlab.systems.markov.defaults).
DEFAULTS = CANONICAL_DEFAULTS
#: A run ended at a level (H or h(pi1)) when its final loss is within this fraction of the gap h(pi1) - H of it.
ENDED_TOLERANCE = 0.1
#: Standard errors of a held-out loss estimate taken as its uncertainty in :func:`ended_basin`.
ENDED_Z = 3.0
#: Relative float64 rounding of a computed loss (the least uncertainty :func:`ended_basin` assumes).
ROUNDING = 1e-13
#: Steps whose sequences are sampled in one call (one seed drawn per chunk: part of what a seed means).
_SAMPLE_CHUNK_STEPS = 64


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
    def optimal_loss(self) -> float:
        """The global minimum of the loss: the chain's entropy rate H (the bigram loss)."""
        return self.chain.entropy_rate

    @property
    def levels(self) -> dict[str, float]:
        """The non-global critical value by name: the unigram loss h(pi1)."""
        return chain_levels(self.chain)

    @property
    def reached(self) -> str:
        """Where the run ended: 'global', 'local' or 'undetermined' (:func:`ended_basin`)."""
        return ended_basin(self.chain, self.final_loss)

    @property
    def agrees(self) -> bool | None:
        return agreement(self.predicted, self.reached)

    @property
    def status(self) -> str:
        """'completed': a run that could not complete raises instead (e.g. a non-finite loss)."""
        return "completed"

    @property
    def message(self) -> str:
        return outcome_message("SGD", self.reached, self.predicted, self.agrees)

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
            "optimal_loss": self.optimal_loss,
            "levels": self.levels,
            "final_minus_optimal": self.final_loss - self.optimal_loss,
            "final_minus_unigram": self.final_loss - self.chain.unigram_loss,
            "gap_closed": gap_closed(self.chain, self.final_loss),
            "predicted": self.predicted,
            "prediction_message": self.prediction_message,
            "reached": self.reached,
            "agrees": self.agrees,
            "status": self.status,
            "message": self.message,
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


def chain_levels(chain: MarkovChain) -> dict[str, float]:
    """The named non-global critical values of the canonical models on ``chain``: {'unigram': h(pi1)}."""
    return {"unigram": chain.unigram_loss}


def outcome_message(what: str, reached: str, predicted: str, agrees: bool | None) -> str:
    """One line: where a training run ended against where the flow analysis predicts it."""
    verdict = "undetermined" if agrees is None else "agrees" if agrees else "disagrees"
    return f"{what} reached '{reached}', the flow analysis predicts '{predicted}': {verdict}"


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
    theta = ewb_point(theta)
    return _loss_grad_from_counts(theta, _transition_counts(seqs))[0]


def minibatch_gradient(theta, seqs) -> np.ndarray:
    """The exact gradient in (e, w, b) of :func:`minibatch_loss` (hand-derived)."""
    theta = ewb_point(theta)
    return _loss_grad_from_counts(theta, _transition_counts(seqs))[1]


def ewb_point(theta) -> np.ndarray:
    theta = finite_array(theta, "theta")
    if theta.shape != (3,):
        raise FlowlabInputError(f"a point of model ewb has 3 coordinates (e, w, b), got shape {theta.shape}")
    return theta


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


def predict(chain: MarkovChain, theta0, *, t_max: float = 1e4) -> tuple[str, str]:
    """(basin, message): where the gradient flow of ``ewb`` from ``theta0`` goes."""
    from flowlab.systems.markov.flow import gradient_flow
    from flowlab.systems.markov.models import get_model

    res = gradient_flow(get_model(MODEL), chain, ewb_point(theta0), t_max=t_max, allow_degenerate=True)
    return res.reached, res.message


def _descend(chain: MarkovChain, theta: np.ndarray, s: dict) -> tuple[list, list, list]:
    """The SGD loop of :func:`sgd_canonical` from ``theta`` with checked settings ``s``:
    (logged steps, logged parameters, mean mini-batch loss since the previous log)."""
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
    return logged_steps, logged_theta, logged_batch


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
    >>> r.predicted, r.reached, abs(r.final_loss - chain.unigram_loss) < 5e-3
    ('local', 'local', True)
    """
    from flowlab.systems.markov.models import get_model
    from flowlab.systems.markov.numeric import NumericModel

    if not isinstance(chain, MarkovChain):
        raise FlowlabInputError(f"chain must be a MarkovChain, got {type(chain).__name__}")
    theta = ewb_point(theta0).copy()
    s = _settings(steps, batch, seq_len, lr, momentum, seed, log_every)
    if init is None:
        init = "e=%g,w=%g,b=%g" % tuple(theta)
    t0 = time.perf_counter()
    if predicted is None:
        predicted = predict(chain, theta)
    logged_steps, logged_theta, logged_batch = _descend(chain, theta, s)
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
