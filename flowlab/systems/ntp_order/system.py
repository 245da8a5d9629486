"""The ``ntp_order`` losses (a **reconstruction**, MODELS.md §7) on the engine's System protocol.

:class:`NtpOrderSystem` with ``stage``:

- ``1``: the stage-1 collocation loss L_0(W_ov) = −(1/K) Σ_x log softmax(W_ov e_x)_{n(x)} over W_ov
  (what Algorithm 1, as reconstructed, trains first);
- ``2``: the stage-2 loss over W_kq with W_ov fixed (``W_ov`` required): the next-token
  cross-entropy (``loss="ce"``) or the attention cross-entropy on the optimal token
  (``loss="attention"``), :func:`~flowlab.systems.ntp_order.model.loss_and_grads`;
- ``"both"``: the next-token cross-entropy over (W_ov, W_kq) together.

Parameters ``W_ov[r,c]`` then ``W_kq[r,c]`` (row-major, 0-based tokens; W_kq[v, q] is the score of
key token v under query q). Loss and gradient are exact, evaluated point by point over the leading
axes of theta (a loop); the Hessian is by central differences (the SystemBase default).

References (what each rests on):
- stage 1, stage 2 ``attention`` and ``both``: optimal loss 0, the infimum of a cross-entropy, **not
  attained** (the weights must diverge). Stage 1: c·W_ov* (the closed-form max-margin target)
  separates every collocation pair. Attention: the training pairs (x*, x) of each query are edges
  of its transitive closure (validated realizable data, unique greatest token), which is acyclic,
  so a score column ranking tokens by their longest chain puts x* strictly first in every sentence;
  c times it sends the attention to x*. Both: the two together, c → ∞.
- stage 2 ``ce`` (W_ov fixed): the loss with all attention on each sentence's optimal token
  (:func:`~flowlab.systems.ntp_order.model.loss_floor`), approached along the same score columns.
  It is the infimum when every sentence's cross-entropy, a convex function of the attention mass
  ψ on its distinct tokens, is least at the vertex ψ = e_{x*}: the first-order condition
  (p − e_y)·W_ov e_v ≥ (p − e_y)·W_ov e_{x*} for every token v of the sentence, checked here; when
  it fails the optimal loss is reported unknown (None).
No non-global level is named (``complete`` False).

Invariants: softmax is unchanged by adding a constant to all its inputs, so the gradient of each
loss has zero column sums: the column sums ``sum W_ov[:,x]`` (stages 1, both) and ``sum W_kq[:,q]``
(stages 2, both) are conserved by the gradient flow.
"""

from __future__ import annotations

import numpy as np

from flowlab.engine.checks import finite_array
from flowlab.engine.errors import FlowlabInputError
from flowlab.engine.system import Reference, SystemBase

from . import model
from .data import OrderDataset
from .targets import ov_target

STAGES = (1, 2, "both")


def matrix_names(block: str, K: int) -> tuple[str, ...]:
    """``block[r,c]`` for a K×K matrix in row-major order."""
    return tuple(f"{block}[{r},{c}]" for r in range(K) for c in range(K))


class NtpOrderSystem(SystemBase):
    """A loss of the reconstructed ntp_order model over W_ov, W_kq or both (module docstring)."""

    name = "ntp_order"

    def __init__(self, data: OrderDataset, stage=1, *, W_ov=None, loss: str = "ce"):
        if not isinstance(data, OrderDataset):
            raise FlowlabInputError(f"data must be an OrderDataset, got {type(data).__name__}")
        if stage not in STAGES:
            raise FlowlabInputError(f"stage must be one of 1, 2, 'both', got {stage!r}")
        if loss not in model.STAGE2_LOSSES:
            raise FlowlabInputError(f"unknown loss {loss!r}: use one of {', '.join(model.STAGE2_LOSSES)}")
        if stage != 2 and loss != "ce":
            raise FlowlabInputError(f"loss={loss!r} is a stage-2 option; stages 1 and 'both' use the cross-entropy")
        K = data.vocab
        if stage == 2:
            if W_ov is None:
                raise FlowlabInputError("stage 2 needs the fixed W_ov (e.g. the stage-1 result)")
            W_ov = finite_array(W_ov, "W_ov")
            if W_ov.shape != (K, K):
                raise FlowlabInputError(f"W_ov must have shape ({K}, {K}), got {W_ov.shape}")
        elif W_ov is not None:
            raise FlowlabInputError("W_ov is fixed only in stage 2; in stages 1 and 'both' it is a parameter")
        self.data, self.stage, self.kind, self.W_ov, self.K = data, stage, loss, W_ov, K
        self.blocks = {1: ("W_ov",), 2: ("W_kq",), "both": ("W_ov", "W_kq")}[stage]
        self.params = sum((matrix_names(b, K) for b in self.blocks), ())
        self.batch = model.make_batch(data.sentences, data.labels("train"), data.optima("train"), K)
        self._reference = None

    def matrices(self, theta) -> dict[str, np.ndarray]:
        """{"W_ov", "W_kq"} at one point (the fixed W_ov in stage 2; no W_kq in stage 1)."""
        K = self.K
        parts = np.split(np.asarray(theta, dtype=np.float64), len(self.blocks))
        out = {b: p.reshape(K, K) for b, p in zip(self.blocks, parts)}
        if self.stage == 2:
            out["W_ov"] = self.W_ov
        return out

    def _value_and_grad(self, theta):
        """(loss, gradient) at one point; NaN where the model refuses non-finite values (overflowing weights),
        so that the engine rejects such a trial step and names the point (``undefined_hint``)."""
        try:
            return self._exact(theta)
        except FlowlabInputError:
            return np.nan, np.full(len(self.params), np.nan)

    def undefined_hint(self, theta) -> str:
        """Why the loss is undefined at ``theta`` (the model's own words)."""
        try:
            self._exact(np.asarray(theta, dtype=np.float64))
        except FlowlabInputError as exc:
            return str(exc)
        return "the loss and gradient are finite there"

    def _exact(self, theta):
        w = self.matrices(theta)
        if self.stage == 1:
            value, g = model.collocation_loss(w["W_ov"], self.data.collocation)
            return value, g.ravel()
        both = self.stage == "both"
        value, g_ov, g_kq = model.loss_and_grads(w["W_ov"], w["W_kq"], self.batch, kind=self.kind, need_ov=both)
        return value, (np.concatenate([g_ov.ravel(), g_kq.ravel()]) if both else g_kq.ravel())

    def _each(self, fn, theta, trailing: tuple) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64)
        if theta.ndim == 0 or theta.shape[-1] != len(self.params):
            raise FlowlabInputError(f"theta must have shape (..., {len(self.params)}) ({' then '.join(self.blocks)} "
                                    f"flattened row-major), got shape {theta.shape}")
        flat = theta.reshape(-1, theta.shape[-1])
        out = np.array([fn(row) for row in flat], dtype=np.float64)
        return out.reshape(theta.shape[:-1] + trailing)

    def loss(self, theta) -> np.ndarray:
        return self._each(lambda row: self._value_and_grad(row)[0], theta, ())

    def gradient(self, theta) -> np.ndarray:
        return self._each(lambda row: self._value_and_grad(row)[1], theta, (len(self.params),))

    def invariants(self, theta) -> dict[str, np.ndarray]:
        """The column sums of each trained matrix (conserved: softmax ignores a common shift)."""
        K = self.K
        out = self._each(lambda row: row.reshape(-1, K, K).sum(axis=1).ravel(), theta, (len(self.blocks) * K,))
        names = [f"sum {b}[:,{c}]" for b in self.blocks for c in range(K)]
        return {name: out[..., i] for i, name in enumerate(names)}

    def _observe(self, theta) -> list[float]:
        w = self.matrices(theta)
        if self.stage == 1:
            Z, y = w["W_ov"].T, np.asarray(self.data.collocation)  # row x: the logits of token x
            W, target = w["W_ov"], ov_target(self.data.collocation)
            cos = float(np.sum(W * target) / (np.linalg.norm(W) * np.linalg.norm(target))) if W.any() else 0.0
            return [*_margins(Z, y), cos]
        batch = self.batch
        phi = model.attention(w["W_kq"], batch)
        on = np.sum(np.where((batch.tokens == batch.optimal[:, None]) & batch.mask, phi, 0.0), axis=1)
        queries = np.unique(batch.query)
        per_query = [float(np.mean(on[batch.query == q])) for q in queries]
        return [*_margins(model.logits(w["W_ov"], w["W_kq"], batch), batch.labels), float(on.min()), *per_query]

    def observables(self, theta) -> dict[str, np.ndarray]:
        """``margin_min``, ``margin_mean`` (z_y − max_{k≠y} z_k over the collocation pairs in stage 1, over
        the training sentences otherwise); stage 1: ``cos_ov`` = cos(W_ov, W_ov*); stages 2, both:
        ``attention_optimal_min`` (least attention mass on x*) and ``attention_optimal[q=Q]`` (its mean
        over the training sentences of query Q)."""
        if self.stage == 1:
            names = ["margin_min", "margin_mean", "cos_ov"]
        else:
            names = (["margin_min", "margin_mean", "attention_optimal_min"]
                     + [f"attention_optimal[q={q}]" for q in np.unique(self.batch.query)])
        out = self._each(self._observe, theta, (len(names),))
        return {name: out[..., i] for i, name in enumerate(names)}

    def reference(self) -> Reference:
        """The optimal loss (an infimum, not attained) and what it rests on (module docstring); cached."""
        if self._reference is None:
            self._reference = self._make_reference()
        return self._reference

    def _make_reference(self) -> Reference:
        kinds = {1: "the collocation loss L_0: c*W_ov* (closed form) separates every pair (x, n(x))",
                 "both": ("the cross-entropy over (W_ov, W_kq): c*W_ov* separates the labels and c times a score "
                          "column ranking each query's tokens by their longest chain in its (acyclic) transitive "
                          "closure sends the attention to x*"),
                 2: ("the attention cross-entropy: c times a score column ranking each query's tokens by their "
                     "longest chain in its (acyclic) transitive closure sends the attention to x*")}
        tail = "; no non-global critical value is named"
        if self.stage != 2 or self.kind == "attention":
            source = f"0: the infimum, not attained (the weights must diverge), of {kinds[self.stage]}, c -> inf"
            return Reference(optimal_loss=0.0, loss_tol=1e-9, source=source + tail)
        floor = model.loss_floor(self.W_ov, self.batch, "ce")
        bad = _vertex_violations(self.W_ov, self.batch)
        if bad:
            source = (f"unknown: with W_ov fixed, all attention on x* ({floor:.12g}) is not the least cross-entropy of "
                      f"sentences {bad[:5]} (moving attention to another of their tokens lowers it)")
            return Reference(optimal_loss=None, loss_tol=1e-9, source=source + tail)
        source = (f"{floor:.12g}: the cross-entropy with W_ov fixed and all attention on each sentence's x* (an "
                  "infimum, not attained); per sentence the least value over the attention simplex (convex; "
                  "first-order condition checked at the vertex x*), approached jointly by c times a score column "
                  "ranking each query's tokens by their longest chain in its transitive closure, c -> inf")
        return Reference(optimal_loss=floor, loss_tol=1e-9 * max(1.0, floor), source=source + tail)

    def describe(self) -> dict:
        return {"system": "ntp_order", "stage": self.stage, "loss": self.kind if self.stage == 2 else "ce",
                "vocab": self.K, "sentences": self.batch.size, "seed": self.data.seed}


def _margins(Z: np.ndarray, y: np.ndarray) -> list[float]:
    """[min, mean] over rows of z_y − max_{k≠y} z_k."""
    rows = np.arange(y.size)
    others = Z.copy()
    others[rows, y] = -np.inf
    m = Z[rows, y] - others.max(axis=1)
    return [float(m.min()), float(m.mean())]


def _vertex_violations(W_ov: np.ndarray, batch) -> list[int]:
    """Sentences whose cross-entropy, as a function of the attention mass on their distinct tokens, is not
    least at the vertex x*: some token v of the sentence has (p − e_y)·W_ov e_v < (p − e_y)·W_ov e_{x*}."""
    _, G = model._cross_entropy(W_ov[:, batch.optimal].T, batch.labels)  # p − e_y with all attention on x*
    slope = G @ W_ov  # (N, K): the derivative along the attention mass of each token
    at_opt = slope[np.arange(batch.size), batch.optimal]
    own = np.where(batch.mask, slope[np.arange(batch.size)[:, None], batch.tokens], np.inf)
    return [int(i) for i in np.nonzero(np.any(own < at_opt[:, None], axis=1))[0]]
