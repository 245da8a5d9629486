"""Max-margin targets W_ov*, W_kq* of the ``ntp_order`` system (reconstruction, MODELS.md §7).

- W_ov* = argmin ‖W‖_F s.t. (e_{n(x)} − e_v)ᵀ W e_x ≥ 1 for every token x and v ≠ n(x). With
  one-hot embeddings the problem splits by column and each column is min ‖w‖² with
  w_{n(x)} − w_v ≥ 1: by symmetry w_v = b for v ≠ n(x), w_{n(x)} = b + 1, minimised at
  b = −1/K, so W_ov* = Σ_x (e_{n(x)} − 𝟙/K) e_xᵀ (closed form; the QP is solved as a check).
- W_kq* = argmin ‖W‖_F s.t. (e_{x*} − e_x)ᵀ W e_q ≥ 1 for every training sentence with query q,
  its optimal token x* and every other distinct token x of it. With one-hot embeddings the
  column q of W holds the attention scores under query q, so the problem is one QP per query
  column. *Reconstruction choice*: a token x with n(x) = n(x*) gives the same logits as x*, so
  the loss does not separate it from x*; such pairs are left out (with the generator's
  permutation collocation there are none, and the constraint set is exactly MODELS.md's).

Solver: cvxpy with Clarabel. Clarabel is an actively maintained interior-point conic solver: it
solves these small dense QPs to high accuracy (about 1e-8) in milliseconds without tuning, unlike
first-order solvers such as OSQP or SCS whose default accuracy (about 1e-4) would blur the cosines
measured against the targets, and it reports an exact termination status (optimal / infeasible /
inaccurate), which is passed on. cvxpy states each problem in its mathematical form
(min ‖w‖² s.t. D w ≥ 1). cvxpy is imported inside the functions (it takes seconds to import);
both come with the ``convex`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowlab.engine.errors import FlowlabInputError

#: Largest |closed form − QP| accepted for W_ov* (Clarabel's default tolerances are ~1e-8).
OV_QP_TOLERANCE = 1e-6
#: Smallest constraint margin accepted from the solver (nominally 1).
MARGIN_TOLERANCE = 1e-6


def ov_target(collocation) -> np.ndarray:
    """W_ov* in closed form: column x is e_{n(x)} − 𝟙/K."""
    n = np.asarray(collocation, dtype=np.int64)
    K = n.size
    W = np.full((K, K), -1.0 / K)
    W[n, np.arange(K)] += 1.0
    return W


def _min_norm(D: np.ndarray, what: str) -> tuple[np.ndarray, str]:
    """argmin ‖w‖² s.t. D w ≥ 1 with cvxpy + Clarabel; (w, status). Infeasible: FlowlabInputError."""
    import cvxpy as cp

    w = cp.Variable(D.shape[1])
    problem = cp.Problem(cp.Minimize(cp.sum_squares(w)), [D @ w >= 1])
    try:
        problem.solve(solver=cp.CLARABEL)
    except cp.error.SolverError as exc:
        return np.full(D.shape[1], np.nan), f"solver_error: {exc}"
    if problem.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        raise FlowlabInputError(f"{what}: the max-margin problem is infeasible (the data are not realizable)")
    if w.value is None:
        return np.full(D.shape[1], np.nan), str(problem.status)
    return np.asarray(w.value, dtype=np.float64), str(problem.status)


def ov_target_qp(collocation) -> tuple[np.ndarray, str]:
    """W_ov* from the QP (a check of :func:`ov_target`): (W, solver status)."""
    n = np.asarray(collocation, dtype=np.int64)
    K = n.size
    rows = []
    for x in range(K):  # w = vec(W) in row-major order: W[r, c] is w[r * K + c]
        for v in range(K):
            if v != n[x]:
                row = np.zeros(K * K)
                row[n[x] * K + x], row[v * K + x] = 1.0, -1.0
                rows.append(row)
    w, status = _min_norm(np.array(rows), "W_ov*")
    return w.reshape(K, K), status


def kq_pairs(data) -> list[set[tuple[int, int]]]:
    """Per query q the pairs (x*, x) the training sentences separate (x ≠ x*, n(x) ≠ n(x*))."""
    n = data.collocation
    pairs: list[set[tuple[int, int]]] = [set() for _ in range(data.vocab)]
    for s, x in zip(data.sentences, data.optima("train")):
        pairs[s[-1]].update((int(x), v) for v in set(s) if v != x and n[v] != n[x])
    return pairs


@dataclass(frozen=True)
class Targets:
    """W_ov* (closed form), W_kq* (QP per column), the W_ov QP check and the solver report."""

    W_ov: np.ndarray
    W_kq: np.ndarray
    ov_qp_error: float | None
    solver: dict
    status: str
    message: str

    def as_dict(self) -> dict:
        return {"status": self.status, "message": self.message, "W_ov": self.W_ov.tolist(),
                "W_kq": self.W_kq.tolist(), "ov_qp_error": self.ov_qp_error, "solver": self.solver}


def max_margin_targets(data, *, check_ov: bool = True) -> Targets:
    """W_ov* and W_kq* of a dataset; status ``optimal`` when every QP is solved optimally and checks."""
    import cvxpy as cp

    K = data.vocab
    W_ov = ov_target(data.collocation)
    problems = []
    err = None
    if check_ov:
        W_qp, st = ov_target_qp(data.collocation)
        err = float(np.max(np.abs(W_qp - W_ov))) if np.all(np.isfinite(W_qp)) else None
        problems.append(("W_ov", st))
    W_kq = np.zeros((K, K))
    empty = []
    for q, pairs in enumerate(kq_pairs(data)):
        if not pairs:
            empty.append(q)
            continue
        D = np.zeros((len(pairs), K))
        for j, (a, b) in enumerate(sorted(pairs)):
            D[j, a], D[j, b] = 1.0, -1.0
        w, st = _min_norm(D, f"W_kq* column of query {q}")
        problems.append((f"W_kq[:, {q}]", st))
        W_kq[:, q] = w
        if np.all(np.isfinite(w)) and np.min(D @ w) < 1 - MARGIN_TOLERANCE:
            problems.append((f"W_kq[:, {q}] margin", f"violated: {np.min(D @ w):.3g}"))
    bad = [(name, st) for name, st in problems if st != cp.OPTIMAL]
    if err is not None and err > OV_QP_TOLERANCE:
        bad.append(("W_ov closed form vs QP", f"differ by {err:.3g}"))
    if err is None and check_ov:
        bad.append(("W_ov QP", "no solution"))
    status = "optimal" if not bad else "failed"
    message = ("every QP solved to optimality" + (f"; W_ov closed form = QP within {err:.1e}" if err is not None else "")
               if not bad else "; ".join(f"{n}: {s}" for n, s in bad))
    if empty:
        message += f"; queries without constraints (zero column): {empty}"
    solver = {"name": "CLARABEL", "via": f"cvxpy {cp.__version__}", "problems": len(problems),
              "statuses": sorted({st for _, st in problems})}
    return Targets(W_ov, W_kq, err, solver, status, message)
