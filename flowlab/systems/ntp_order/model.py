"""The one-layer transformer of the ``ntp_order`` system: losses and exact gradients, vectorised.

**Reconstruction** (MODELS.md §7, after the attention-SVM model of Tarzanagh et al. 2023): with
one-hot embeddings a sentence X = [e_{x_1} .. e_{x_T}] with query x_T gives the attention
φ(X) = softmax(Xᵀ W_kq e_{x_T}) (so the score of position t is W_kq[x_t, x_T]), the logits
z = W_ov X φ(X) ∈ R^K and the loss −log softmax(z)_y, averaged over sentences. Sentences of
different lengths are padded and masked (:class:`Batch`). Stage 1 uses the collocation loss
L_0(W_ov) = −(1/K) Σ_x log softmax(W_ov e_x)_{n(x)}.

Gradients (derived by hand, checked by finite differences in the tests): with G = (p − e_y)/N,
∂L/∂W_ov = Gᵀ A where A[i, v] = Σ_t φ_it [x_it = v]; with g_it = G_i · W_ov e_{x_it},
∂L/∂s_it = φ_it (g_it − Σ_t' φ_it' g_it') and ∂L/∂W_kq[v, q] = Σ_i [q_i = q] Σ_t [x_it = v] ∂L/∂s_it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowlab.engine.errors import FlowlabInputError

#: The stage-2 losses (training.py): the model's next-token cross-entropy with W_ov fixed, or the
#: cross-entropy of the attention on the optimal token, −log Σ_{t: x_t = x*} φ_t.
STAGE2_LOSSES = ("ce", "attention")


@dataclass(frozen=True)
class Batch:
    """Padded sentences: ``tokens`` (N, T) int (0 where padded), ``mask`` (N, T) bool, the query,
    label and optimal token of each sentence, and two flat index arrays (N, T) used to gather and
    scatter with ``np.bincount``: ``row_token`` = i·K + x_it and ``token_query`` = x_it·K + q_i;
    ``pad`` is 0 on tokens and −inf on padding (added to the attention scores)."""

    tokens: np.ndarray
    mask: np.ndarray
    query: np.ndarray
    labels: np.ndarray
    optimal: np.ndarray
    vocab: int
    row_token: np.ndarray
    token_query: np.ndarray
    pad: np.ndarray

    @property
    def size(self) -> int:
        return int(self.tokens.shape[0])

    def per_token(self, values: np.ndarray) -> np.ndarray:
        """(N, K): Σ_t values[i, t] [x_it = v] (padded positions must hold 0)."""
        K = self.vocab
        return np.bincount(self.row_token.ravel(), values.ravel(), minlength=self.size * K).reshape(self.size, K)


def make_batch(sentences, labels, optimal, K: int) -> Batch:
    """Pad ``sentences`` (lists of ints ending with the query) into a :class:`Batch`."""
    N = len(sentences)
    if N == 0:
        raise FlowlabInputError("a batch needs at least one sentence")
    T = max(len(s) for s in sentences)
    tokens = np.zeros((N, T), dtype=np.int64)
    mask = np.zeros((N, T), dtype=bool)
    for i, s in enumerate(sentences):
        tokens[i, : len(s)] = s
        mask[i, : len(s)] = True
    query = np.array([s[-1] for s in sentences], dtype=np.int64)
    return Batch(tokens, mask, query, np.asarray(labels, dtype=np.int64), np.asarray(optimal, dtype=np.int64), K,
                 np.arange(N)[:, None] * K + tokens, tokens * K + query[:, None], np.where(mask, 0.0, -np.inf))


def _cross_entropy(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: −log softmax(z)_y and softmax(z) − e_y, accurate when softmax(z)_y ≈ 1.

    1 − p_y is never formed by subtraction: the loss is (max z − z_y) + log1p(Σ_{k ≠ top} e^{z_k − max z})
    and the y entry of the gradient is −Σ_{k ≠ y} p_k, so the tiny gradients of a saturated softmax keep
    their relative accuracy (normalised gradient descent uses only their direction).
    """
    rows = np.arange(y.size)
    m = np.max(z, axis=1, keepdims=True)
    E = np.exp(z - m)
    others = E.copy()
    others[rows, np.argmax(z, axis=1)] = 0.0
    rest = np.sum(others, axis=1)
    loss = (m[:, 0] - z[rows, y]) + np.log1p(rest)
    P = E / (1.0 + rest)[:, None]
    P[rows, y] = 0.0
    P[rows, y] = -np.sum(P, axis=1)
    return loss, P


def attention(W_kq: np.ndarray, batch: Batch) -> np.ndarray:
    """φ (N, T): softmax over the unmasked positions of the scores W_kq[x_t, x_T]."""
    s = W_kq.ravel()[batch.token_query] + batch.pad
    e = np.exp(s - np.max(s, axis=1, keepdims=True))
    return e / np.sum(e, axis=1, keepdims=True)


def logits(W_ov: np.ndarray, W_kq: np.ndarray, batch: Batch) -> np.ndarray:
    """z (N, K) = W_ov X φ(X) for every sentence."""
    return batch.per_token(attention(W_kq, batch)) @ W_ov.T


def predict(W_ov: np.ndarray, W_kq: np.ndarray, batch: Batch) -> np.ndarray:
    """argmax_k z_k per sentence."""
    return np.argmax(logits(W_ov, W_kq, batch), axis=1)


def _check_finite(value: float, what: str) -> float:
    if not np.isfinite(value):
        raise FlowlabInputError(f"{what} is not finite ({value!r}): the weights overflow; use smaller steps")
    return float(value)


def loss_and_grads(W_ov: np.ndarray, W_kq: np.ndarray, batch: Batch, *, kind: str = "ce",
                   need_ov: bool = True, need_kq: bool = True):
    """(loss, ∂L/∂W_ov or None, ∂L/∂W_kq or None) of the loss ``kind`` (STAGE2_LOSSES).

    ``ce``: mean −log softmax(z)_y. ``attention``: mean −log Σ_{t: x_t = x*} φ_t (does not
    depend on W_ov: its W_ov gradient is zero).
    """
    if kind not in STAGE2_LOSSES:
        raise FlowlabInputError(f"unknown loss {kind!r}: use one of {', '.join(STAGE2_LOSSES)}")
    N = batch.size
    phi = attention(W_kq, batch)
    if kind == "attention":
        on = (batch.tokens == batch.optimal[:, None]) & batch.mask
        off = np.sum(np.where(on, 0.0, phi), axis=1)  # 1 − mass on x*, summed (no cancellation)
        loss = _check_finite(-np.mean(np.log1p(-off)), "the attention loss")
        dscore = np.where(on, -phi * (off / (1.0 - off))[:, None], phi) / N
        g_ov = np.zeros_like(W_ov) if need_ov else None
    else:
        V = W_ov.T[batch.tokens]  # (N, T, K): the value W_ov e_{x_t} of every position
        losses, G = _cross_entropy(np.einsum("nt,ntk->nk", phi, V), batch.labels)
        loss = _check_finite(float(np.mean(losses)), "the cross-entropy loss")
        G /= N
        g_ov = G.T @ batch.per_token(phi) if need_ov else None
        if need_kq:
            g = np.einsum("nk,ntk->nt", G, V)
            # φ_t (g_t − Σ_u φ_u g_u) with g measured from the most attended position r: then
            # Σ_u φ_u (g_u − g_r) has no 1 − φ_r cancellation, so it stays exact when φ_r ≈ 1
            d = g - g[np.arange(N), np.argmax(phi, axis=1)][:, None]
            dscore = phi * (d - np.sum(phi * d, axis=1, keepdims=True))
    g_kq = None
    if need_kq:
        K = batch.vocab
        g_kq = np.bincount(batch.token_query.ravel(), dscore.ravel(), minlength=K * K).reshape(K, K)
    return loss, g_ov, g_kq


def collocation_loss(W_ov: np.ndarray, collocation) -> tuple[float, np.ndarray]:
    """(L_0, ∂L_0/∂W_ov) with L_0 = −(1/K) Σ_x log softmax(W_ov e_x)_{n(x)} (column x is token x)."""
    K = W_ov.shape[1]
    losses, P = _cross_entropy(W_ov.T, np.asarray(collocation, dtype=np.int64))
    return _check_finite(float(np.mean(losses)), "the collocation loss"), P.T / K


def loss_floor(W_ov: np.ndarray, batch: Batch, kind: str = "ce") -> float:
    """The stage-2 loss with all attention on each sentence's optimal token (0 for ``attention``)."""
    if kind == "attention":
        return 0.0
    return float(np.mean(_cross_entropy(W_ov[:, batch.optimal].T, batch.labels)[0]))
