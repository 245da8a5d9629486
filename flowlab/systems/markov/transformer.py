"""A real single-layer transformer in PyTorch, trained on sequences of a binary Markov chain.

This is the only flowlab module that imports torch (the ``torch`` extra:
``pip install -e ".[torch]"``).

Architecture (no layer norm by default; ``layer_norm=True`` adds pre-LN before attention and
the FFN and a final LN):

    h0_n = E[x_n] + P_n                                   token + positional embedding (d)
    h1_n = h0_n + W_O sum_{i<=n} softmax_i(<W_Q h0_n, W_K h0_i>/sqrt(d)) W_V h0_i    one causal head
    h2_n = h1_n + W_2 ReLU(W_1 h1_n + c_1) + c_2          feed-forward block (d_ff = 4d)
    z_n  = <E[1] - E[0], h2_n> + b                        logit of "x_{n+1} = 1", head tied to E

trained with the binary cross-entropy of sigma(z_n) against x_{n+1} at positions 1..N-1.

Initialisations:

* ``standard``: every weight N(0, 0.02^2), biases 0;
* ``rank-one`` (:func:`init_rank_one`): the weights of a point (e, w, a) of the canonical
  analysis (MODELS.md section 4). With alpha a random +-1/sqrt(d) vector (unit norm) and
  beta = (1, ..., 1)/sqrt(d_ff) (non-negative, so ReLU acts on it coordinate-wise as on a scalar):
  E[0] = 0, E[1] = e alpha, P_n = -(e/2) alpha, W_Q = W_K = 0 (uniform causal attention),
  W_V = a alpha alpha^T, W_O = alpha alpha^T, W_1 = 2|w| beta alpha^T, W_2 = 2w alpha beta^T,
  c_1 = c_2 = 0, b as given. Then h0_n = e (x_n - 1/2) alpha, h1_n = e s_n alpha with
  s_n = (x_n - 1/2) + a (m_n - 1/2), the FFN adds 4w|w| e max(s_n, 0) alpha (e > 0), and
  z_n = e^2 [s_n + 4w|w| max(s_n, 0)] + b: exactly the ``ewa`` logit. For e < 0 the same
  network with |e| and -alpha is built (the logit depends on e^2 only).
* ``guideline`` (:func:`init_guideline`): the rank-one weights of the point that
  :func:`flowlab.systems.markov.guide.guide` recommends (a = 0), plus the standard N(0, 0.02^2) noise on every
  weight matrix unless ``noise=0`` (so that no weight sits exactly at a symmetric zero).

Prediction (like with like): the network's own initial weights are projected on the canonical
parameters by :func:`canonical_point`, the left inverse of the rank-one construction (it returns
(|e|, w, a, b) exactly for the weights of :func:`init_rank_one` without noise), and the basin is
the one the gradient flow of ``ewab`` (MODELS.md section 4, bias free) reaches from that point. The
verdict ``reached`` is :func:`flowlab.systems.markov.sgd.ended_basin` of the held-out loss with an uncertainty of
:data:`flowlab.systems.markov.sgd.ENDED_Z` standard errors (over held-out sequences, the independent units).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from flowlab.engine.checks import FlowlabInputError, integer, real_number
from flowlab.systems.markov.chain import MarkovChain
from flowlab.systems.markov.defaults import OPTIMIZERS, STANDARD_STD, TRANSFORMER_DEFAULTS, TRANSFORMER_INITS

INITS = TRANSFORMER_INITS
#: Defaults of :func:`train_transformer` (the paper's Figure 4 at p = 0.5, q = 0.8, in seconds per run), shared
#: with the CLI through flowlab.systems.markov.defaults; STANDARD_STD: the standard initialisation's weight std.
DEFAULTS = TRANSFORMER_DEFAULTS
#: Shorter runs for a quick look (tests, ``--fast``); one thread, as short runs gain nothing from more and a
#: busy machine loses a lot (the numbers do not depend on the thread count).
FAST_SETTINGS = {"steps": 400, "eval_sequences": 2**12, "val_sequences": 1024, "log_every": 20, "threads": 1}
#: The optimiser of the extra runs that show an adaptive optimiser escaping the unigram plateau.
ADAM_CHECK = {"optimizer": "adam", "lr": 1e-3}


class SingleLayerTransformer(nn.Module):
    """One causal softmax attention head and a ReLU FFN on a binary alphabet; see the module docstring."""

    def __init__(self, d: int = 8, seq_len: int = 32, d_ff: int | None = None, *, layer_norm: bool = False,
                 dtype=torch.float32):
        super().__init__()
        d, seq_len = integer(d, "d"), integer(seq_len, "seq_len")
        d_ff = integer(4 * d if d_ff is None else d_ff, "d_ff")
        self.d, self.seq_len, self.d_ff, self.layer_norm = d, seq_len, d_ff, bool(layer_norm)

        def param(*shape):
            return nn.Parameter(torch.zeros(*shape, dtype=dtype))

        self.tok = param(2, d)  # E[0], E[1]
        self.pos = param(seq_len, d)  # P_1 .. P_N
        self.W_Q, self.W_K, self.W_V, self.W_O = param(d, d), param(d, d), param(d, d), param(d, d)
        self.W_1, self.c_1 = param(d_ff, d), param(d_ff)
        self.W_2, self.c_2 = param(d, d_ff), param(d)
        self.bias = param(())
        if self.layer_norm:
            self.ln_1 = nn.LayerNorm(d, dtype=dtype)
            self.ln_2 = nn.LayerNorm(d, dtype=dtype)
            self.ln_f = nn.LayerNorm(d, dtype=dtype)
        mask = torch.tril(torch.ones(seq_len, seq_len, dtype=torch.bool))
        self.register_buffer("mask", mask, persistent=False)

    #: Weight matrices (drawn by the standard initialisation); the rest are biases / LN parameters.
    WEIGHTS = ("tok", "pos", "W_Q", "W_K", "W_V", "W_O", "W_1", "W_2")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits z_n of "next token is 1" for every position: (batch, N) from tokens (batch, N)."""
        n = x.shape[-1]
        if n > self.seq_len:
            raise FlowlabInputError(f"sequences of length {n} exceed the model's context {self.seq_len}")
        h = self.tok[x] + self.pos[:n]
        a_in = self.ln_1(h) if self.layer_norm else h
        q, k, v = a_in @ self.W_Q.T, a_in @ self.W_K.T, a_in @ self.W_V.T
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.d)
        scores = scores.masked_fill(~self.mask[:n, :n], float("-inf"))
        h = h + (torch.softmax(scores, dim=-1) @ v) @ self.W_O.T
        f_in = self.ln_2(h) if self.layer_norm else h
        h = h + torch.relu(f_in @ self.W_1.T + self.c_1) @ self.W_2.T + self.c_2
        if self.layer_norm:
            h = self.ln_f(h)
        return h @ (self.tok[1] - self.tok[0]) + self.bias

    def rank_one_fraction(self, name: str) -> float | None:
        """sigma_1^2 / sum sigma_i^2 of a weight matrix (None for an all-zero matrix)."""
        with torch.no_grad():
            s = torch.linalg.svdvals(getattr(self, name).double())
        total = float(torch.sum(s * s))
        return None if total == 0.0 else float(s[0] ** 2) / total


# --------------------------------------------------------------------- initialisations
def _generator(seed) -> torch.Generator:
    return torch.Generator().manual_seed(integer(seed, "seed", 0))


def _add_noise(model: SingleLayerTransformer, std: float, gen: torch.Generator) -> None:
    with torch.no_grad():
        for name in model.WEIGHTS:
            p = getattr(model, name)
            p.add_(std * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))


def init_standard(seed: int = 0, *, std: float = STANDARD_STD, **model_kwargs) -> SingleLayerTransformer:
    """A new model with every weight N(0, std^2) (seeded) and biases 0."""
    std = real_number(std, "std")
    model = SingleLayerTransformer(**model_kwargs)
    _add_noise(model, std, _generator(seed))
    return model


def rank_one_vector(d: int, seed: int) -> np.ndarray:
    """alpha: a random vector with entries +-1/sqrt(d) (unit norm), from ``seed``."""
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=d)
    return signs / math.sqrt(d)


def init_rank_one(e: float, w: float, a: float = 0.0, seed: int = 0, *, b: float = 0.0, noise: float = 0.0,
                  **model_kwargs) -> SingleLayerTransformer:
    """A new model whose weights realise the canonical point (e, w, a) with bias b (module docstring).

    Without noise its logits equal e^2 [s_n + 4w|w| max(s_n, 0)] + b exactly (the ``ewa`` logit).
    ``noise`` > 0 adds N(0, noise^2) to every weight matrix (seeded by ``seed`` too).
    """
    e, w, a, b = (real_number(v, n) for v, n in ((e, "e"), (w, "w"), (a, "a"), (b, "b")))
    noise = real_number(noise, "noise")
    if noise < 0:
        raise FlowlabInputError(f"noise must be >= 0, got {noise}")
    model = SingleLayerTransformer(**model_kwargs)
    gen = _generator(seed)
    d, d_ff = model.d, model.d_ff
    alpha = rank_one_vector(d, int(seed)) * (1.0 if e >= 0 else -1.0)
    e = abs(e)
    beta = np.ones(d_ff) / math.sqrt(d_ff)
    aa = np.outer(alpha, alpha)
    values = {
        "tok": np.stack([np.zeros(d), e * alpha]),
        "pos": np.tile(-(e / 2) * alpha, (model.seq_len, 1)),
        "W_Q": np.zeros((d, d)),
        "W_K": np.zeros((d, d)),
        "W_V": a * aa,
        "W_O": aa,
        "W_1": 2 * abs(w) * np.outer(beta, alpha),
        "W_2": 2 * w * np.outer(alpha, beta),
        "bias": np.array(b),
    }
    with torch.no_grad():
        for name, val in values.items():
            p = getattr(model, name)
            p.copy_(torch.as_tensor(val, dtype=torch.float64).to(p.dtype))
    if noise > 0:
        _add_noise(model, noise, gen)
    return model


def init_guideline(chain: MarkovChain, seed: int = 0, *, noise: float = STANDARD_STD, guide_point=None,
                   **model_kwargs) -> SingleLayerTransformer:
    """The rank-one weights of :func:`flowlab.systems.markov.guide.guide`'s point for ``chain`` (a = 0), plus N(0, noise^2)."""
    if guide_point is None:
        from flowlab.systems.markov.guide import guide

        guide_point = guide(chain)["point"]
    return init_rank_one(guide_point["e"], guide_point["w"], 0.0, seed, b=guide_point.get("b", 0.0),
                         noise=noise, **model_kwargs)


# ---------------------------------------------------------------------------- training
def _bce(model, x: torch.Tensor) -> torch.Tensor:
    """Per-position BCE (batch, N-1) of predicting x_{n+1} from the prefix up to n."""
    z = model(x)[:, :-1]
    y = x[:, 1:].to(z.dtype)
    return nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")


def heldout_loss(model, chain: MarkovChain, n_sequences: int, seed: int, *, batch: int = 4096) -> tuple[float, float]:
    """(mean BCE, standard error) of ``model`` on ``n_sequences`` fresh sequences (positions 1..N-1).

    The standard error is taken over sequences (independent draws; positions within one sequence
    are correlated), from the per-sequence mean losses; it is NaN-free for one sequence (then inf).
    """
    total, total_sq = 0.0, 0.0
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for start in range(0, n_sequences, batch):
            n = min(batch, n_sequences - start)
            x = torch.from_numpy(chain.sample(n, model.seq_len, int(rng.integers(2**63 - 1))).astype(np.int64))
            per_seq = _bce(model, x).double().mean(dim=1)
            total += float(per_seq.sum())
            total_sq += float((per_seq * per_seq).sum())
    mean = total / n_sequences
    if n_sequences < 2:
        return mean, math.inf
    var = max((total_sq - n_sequences * mean * mean) / (n_sequences - 1), 0.0)
    return mean, math.sqrt(var / n_sequences)


def canonical_point(model: SingleLayerTransformer) -> dict | None:
    """The canonical parameters (e, w, a, b) read off a network's weights (None with layer norm).

    The left inverse of :func:`init_rank_one`: with d = E[1] - E[0] (the output direction, as the
    head is tied to the embeddings),

    * e = |d| and alpha = d / e;
    * a = alpha^T W_O W_V alpha (the gain of the attention path along alpha);
    * w = sign(g) sqrt(|g| / 4) with g = alpha^T W_2 ReLU(W_1 alpha), the FFN's response along alpha
      to a unit input along alpha (4 w|w| in the rank-one network);
    * b = bias + e alpha^T (E[0] + mean_n P_n) + e^2 / 2: the output bias plus the logit offset of the
      embeddings along alpha relative to the canonical -e^2/2 (zero in the rank-one network).

    What the canonical model fixes and the projection does not read: W_Q, W_K (zero: uniform
    attention), the spread of P_n around its mean, the components off alpha, and the biases c_1,
    c_2 (zero at every initialisation built here). At e = 0 (the unigram set) alpha, w and a are
    undefined: they are None.
    """
    if model.layer_norm:
        return None
    with torch.no_grad():
        diff = (model.tok[1] - model.tok[0]).double()
        e = float(torch.linalg.norm(diff))
        bias = float(model.bias.double())
        if e == 0.0:
            return {"e": 0.0, "w": None, "a": None, "b": bias}
        alpha = diff / e
        a = float(alpha @ model.W_O.double() @ model.W_V.double() @ alpha)
        g = float(alpha @ model.W_2.double() @ torch.relu(model.W_1.double() @ alpha))
        offset = float(alpha @ (model.tok[0].double() + model.pos[: model.seq_len - 1].double().mean(dim=0)))
    w = math.copysign(math.sqrt(abs(g) / 4.0), g)
    return {"e": e, "w": w, "a": a, "b": bias + e * offset + e * e / 2.0}




def build_model(chain: MarkovChain, init: str, seed: int, *, d: int, seq_len: int, layer_norm: bool = False,
                noise: float = STANDARD_STD, point: dict | None = None, dtype=torch.float32):
    """(model, the canonical point its weights were built from, None for 'standard') for an initialisation."""
    kwargs = {"d": d, "seq_len": seq_len, "layer_norm": layer_norm, "dtype": dtype}
    if init == "standard":
        return init_standard(seed, **kwargs), None
    if init == "guideline":
        from flowlab.systems.markov.guide import guide

        pt = guide(chain)["point"]
        return init_guideline(chain, seed, noise=noise, guide_point=pt, **kwargs), {**pt, "a": 0.0}
    if init == "rank-one":
        if point is None or not {"e", "w"} <= set(point) or set(point) - {"e", "w", "a", "b"}:
            raise FlowlabInputError("init 'rank-one' needs a point with e and w (and optionally a, b), e.g. e=1,w=-1.5,a=0")
        pt = {"e": point["e"], "w": point["w"], "a": point.get("a", 0.0), "b": point.get("b", 0.0)}
        return init_rank_one(pt["e"], pt["w"], pt["a"], seed, b=pt["b"], noise=noise, **kwargs), pt
    raise FlowlabInputError(f"unknown initialisation {init!r}; choose one of {', '.join(INITS)}")


#: The canonical model the prediction integrates: (e, w, a, b), bias free (MODELS.md section 4).
PREDICTION_MODEL = "ewab"


def _prediction(chain: MarkovChain, projected: dict | None) -> tuple[str, str]:
    """(basin, basis): where the gradient flow of ``ewab`` goes from the network's projected initial weights."""
    from flowlab.systems.markov.flow import gradient_flow
    from flowlab.systems.markov.models import get_model

    if projected is None:
        return "undetermined", "layer norm: the network has no canonical counterpart (e, w, a, b); no prediction"
    if projected["w"] is None:
        return "undetermined", "e = 0: the weights project on the unigram set, where w and a are undefined"
    model = get_model(PREDICTION_MODEL)
    start = [projected[k] for k in model.params]
    res = gradient_flow(model, chain, start, allow_degenerate=True)
    where = ", ".join(f"{k} = {v:.4g}" for k, v in projected.items())
    return res.reached, (f"flow of {PREDICTION_MODEL} from the network's initial weights projected on the canonical "
                         f"parameters ({where}): {res.message}")


#: Cost model of :func:`estimate_training` (measured on 2 shared CPU cores with torch, float32): about
#: 4e9 multiply-adds per second in the d x d products (d = 256: 0.2 ms per token of evaluation), plus
#: about 2 microseconds per token of sampling and framework overhead (d = 8).
FLOP_RATE = 4e9
TOKEN_OVERHEAD = 2e-6
#: Sequences per evaluation chunk of :func:`heldout_loss`.
EVAL_CHUNK = 4096


def weight_count(d: int, seq_len: int) -> int:
    """Trainable numbers of :class:`SingleLayerTransformer` without layer norm: embeddings 2d + N d,
    W_Q, W_K, W_V, W_O 4 d^2, the FFN 8 d^2 + 4d + d, and the output bias."""
    return 12 * d * d + seq_len * d + 7 * d + 1


def estimate_training(*, d, seq_len, steps, batch, eval_sequences, val_sequences, log_every) -> tuple[float, float]:
    """(bytes, seconds): a rough up-front estimate of :func:`train_transformer`'s peak memory and run time.

    Memory: the 12 d^2 + N d weights with their gradients and two optimiser states (float32), plus the
    activations of the largest batch (training with backward, a validation sample or an evaluation
    chunk): about 16 d + 2 N floats per token. Time: tokens processed (3 per training token for the
    backward pass; the validation sample at every logged step; the held-out evaluation) times
    TOKEN_OVERHEAD + (12 d^2 + 2 N d) / FLOP_RATE, plus the SVDs of W_V and W_1 at every logged step.
    """
    weights = weight_count(d, seq_len)
    largest = max(2 * batch, val_sequences, min(eval_sequences, EVAL_CHUNK))
    memory = 4 * (4 * weights + largest * seq_len * (16 * d + 2 * seq_len))
    logs = steps // log_every + 2
    tokens = seq_len * (3 * steps * batch + logs * val_sequences + eval_sequences)
    seconds = tokens * (TOKEN_OVERHEAD + (12 * d * d + 2 * seq_len * d) / FLOP_RATE) + logs * 50 * d**3 / FLOP_RATE
    return float(memory), float(seconds)


def check_training_cost(**sizes) -> None:
    """Refuse a run whose estimated memory or time exceeds TRAINING_LIMITS, before any work."""
    from flowlab.systems.markov.sgd import refuse_costly

    refuse_costly(*estimate_training(**sizes), sizes, "d, steps, batch, seq_len or the sample sizes")


def train_transformer(
    chain: MarkovChain,
    *,
    init: str = "standard",
    seed: int = 0,
    point: dict | None = None,
    d: int = DEFAULTS["d"],
    seq_len: int = DEFAULTS["seq_len"],
    steps: int = DEFAULTS["steps"],
    batch: int = DEFAULTS["batch"],
    lr: float = DEFAULTS["lr"],
    momentum: float = DEFAULTS["momentum"],
    optimizer: str = DEFAULTS["optimizer"],
    log_every: int = DEFAULTS["log_every"],
    eval_sequences: int = DEFAULTS["eval_sequences"],
    val_sequences: int = DEFAULTS["val_sequences"],
    noise: float | None = None,
    layer_norm: bool = DEFAULTS["layer_norm"],
    threads: int = DEFAULTS["threads"],
    progress=None,
) -> dict:
    """Train the single-layer transformer on ``chain`` and return a JSON-ready result.

    ``init``: 'standard', 'guideline' or 'rank-one' (with ``point`` = {e, w, a[, b]}). ``noise``
    is the std of the Gaussian added to the rank-one weights (default: 0.02 for 'guideline', 0 for
    'rank-one'). Fresh sequences every step (seeded); the loss curve ``losses`` is measured on a
    fixed validation sample of ``val_sequences`` sequences at every logged step, the rank-one
    fractions of W_V and W_1 at the same steps, and ``final_loss`` on ``eval_sequences`` fresh
    held-out sequences (with its standard error over sequences). ``initial`` is
    :func:`canonical_point` of the initial weights and ``predicted`` the basin the flow of ``ewab``
    reaches from it; ``reached`` is :func:`flowlab.systems.markov.sgd.ended_basin` of the held-out loss with an
    uncertainty of ENDED_Z standard errors; ``agrees`` is None when either is undetermined.
    """
    s = _settings(chain, init=init, seed=seed, d=d, seq_len=seq_len, steps=steps, batch=batch, lr=lr,
                  momentum=momentum, optimizer=optimizer, log_every=log_every, eval_sequences=eval_sequences,
                  val_sequences=val_sequences, noise=noise, layer_norm=layer_norm, threads=threads)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(s["threads"])
    t0 = time.perf_counter()
    try:
        # the noise of a 'standard' init is not used (its settings say None)
        model, built_from = build_model(chain, init, s["seed"], d=s["d"], seq_len=s["seq_len"], layer_norm=layer_norm,
                                        noise=s["noise"] or 0.0, point=point)
        projected = canonical_point(model)
        log = _fit(model, chain, s, progress)
        final_loss, final_se = heldout_loss(model, chain, s["eval_sequences"], log.pop("heldout_seed"))
    finally:
        torch.set_num_threads(old_threads)
    seconds = time.perf_counter() - t0
    return _result(chain, model, s, projected, built_from, log, final_loss, final_se, seconds)


def _settings(chain: MarkovChain, *, init, seed, d, seq_len, steps, batch, lr, momentum, optimizer, log_every,
              eval_sequences, val_sequences, noise, layer_norm, threads) -> dict:
    """The checked settings of :func:`train_transformer` (refused up front when the run would cost too much)."""
    if not isinstance(chain, MarkovChain):
        raise FlowlabInputError(f"chain must be a MarkovChain, got {type(chain).__name__}")
    if optimizer not in OPTIMIZERS:
        raise FlowlabInputError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    d, seq_len = integer(d, "d"), integer(seq_len, "seq_len", 2)
    steps, batch, log_every = integer(steps, "steps"), integer(batch, "batch"), integer(log_every, "log_every")
    eval_sequences, val_sequences = integer(eval_sequences, "eval_sequences"), integer(val_sequences, "val_sequences")
    threads = integer(threads, "threads")
    seed = integer(seed, "seed", 0)
    check_training_cost(d=d, seq_len=seq_len, steps=steps, batch=batch, eval_sequences=eval_sequences,
                        val_sequences=val_sequences, log_every=log_every)
    lr, momentum = real_number(lr, "lr"), real_number(momentum, "momentum")
    if lr <= 0 or not 0 <= momentum < 1:
        raise FlowlabInputError(f"need lr > 0 and 0 <= momentum < 1, got lr={lr}, momentum={momentum}")
    if noise is None:
        noise = STANDARD_STD if init == "guideline" else 0.0
    noise = real_number(noise, "noise")
    return {"init": init, "seed": seed, "d": d, "d_ff": 4 * d, "seq_len": seq_len, "steps": steps,
            "batch": batch, "lr": lr, "momentum": momentum, "optimizer": optimizer, "log_every": log_every,
            "eval_sequences": eval_sequences, "val_sequences": val_sequences,
            "noise": noise if init != "standard" else None, "standard_std": STANDARD_STD,
            "layer_norm": bool(layer_norm), "threads": threads}


def _fit(model: SingleLayerTransformer, chain: MarkovChain, s: dict, progress) -> dict:
    """Train ``model`` in place with the settings ``s``; returns the log (the validation loss, the mean
    training loss since the previous log and the rank-one fractions at every logged step) and the seed
    of the held-out evaluation (``heldout_seed``)."""
    if s["optimizer"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=s["lr"], momentum=s["momentum"])
    else:
        opt = torch.optim.Adam(model.parameters(), lr=s["lr"], betas=(s["momentum"] or 0.9, 0.999))
    seeds = np.random.SeedSequence(s["seed"]).spawn(3)
    data_rng = np.random.default_rng(seeds[0])
    val_x = torch.from_numpy(
        chain.sample(s["val_sequences"], s["seq_len"], int(seeds[1].generate_state(1)[0])).astype(np.int64))
    log = {"steps": [], "losses": [], "train_losses": [], "W_V": [], "W_1": []}

    def record(step, train_loss):
        with torch.no_grad():
            val = float(_bce(model, val_x).double().mean())
        log["steps"].append(step)
        log["losses"].append(val)
        log["train_losses"].append(val if train_loss is None else train_loss)
        log["W_V"].append(model.rank_one_fraction("W_V"))
        log["W_1"].append(model.rank_one_fraction("W_1"))

    record(0, None)
    steps, batch, chunk = s["steps"], s["batch"], 64
    running, n_running = 0.0, 0
    data = None
    for step in range(1, steps + 1):
        k = (step - 1) % chunk
        if k == 0:
            n = min(chunk, steps - step + 1)
            data = torch.from_numpy(
                chain.sample(n * batch, s["seq_len"], int(data_rng.integers(2**63 - 1))).astype(np.int64))
        x = data[k * batch : (k + 1) * batch]
        loss = _bce(model, x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FlowlabInputError(f"training diverged at step {step} (lr={s['lr']:g}): the loss is not finite; "
                                    "lower the learning rate")
        running += value
        n_running += 1
        if step % s["log_every"] == 0 or step == steps:
            record(step, running / n_running)
            running, n_running = 0.0, 0
            if progress is not None:
                progress(step)
    log["heldout_seed"] = int(seeds[2].generate_state(1)[0])
    return log


def _result(chain: MarkovChain, model, s: dict, projected, built_from, log: dict, final_loss: float,
            final_se: float, seconds: float) -> dict:
    """The JSON-ready result of :func:`train_transformer`: the verdict against the flow's prediction and the log."""
    from flowlab.systems.markov.sgd import ENDED_Z, agreement, chain_levels, ended_basin, gap_closed, outcome_message

    H, h = chain.entropy_rate, chain.unigram_loss
    reached = ended_basin(chain, final_loss, ENDED_Z * final_se)
    predicted, basis = _prediction(chain, projected)
    agrees = agreement(predicted, reached)
    return {
        "status": "completed",
        "message": outcome_message("training", reached, predicted, agrees),
        "model": "transformer",
        "chain": chain.as_dict(),
        "init": s["init"],
        "initial": projected,
        "rank_one_point": built_from,
        "final_loss": final_loss,
        "final_loss_se": final_se,
        "optimal_loss": H,
        "levels": chain_levels(chain),
        "final_minus_optimal": final_loss - H,
        "final_minus_unigram": final_loss - h,
        "gap_closed": gap_closed(chain, final_loss),
        "reached": reached,
        "predicted": predicted,
        "prediction_basis": basis,
        "agrees": agrees,
        "steps": log["steps"],
        "losses": log["losses"],
        "train_losses": log["train_losses"],
        "rank_one_fraction": {"W_V": log["W_V"], "W_1": log["W_1"]},
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "settings": s,
        "seconds": seconds,
    }
