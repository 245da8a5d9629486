"""k-state Markov chains and softmax logit models on them (MODELS.md sections 1-2, generalised).

A :class:`KStateChain` is a k x k kernel P (rows summing to 1, irreducible) with its stationary
law pi, entropy rate sum_x pi_x H(P(x, .)), unigram loss H(pi) and a seeded sampler. A
:class:`KStateModel` gives k logits g_j(theta; x), one per next token j, as SymPy expressions
in named parameters and the current token x in {0, ..., k-1}; :class:`KStateNumeric` compiles
them once and evaluates the next-token loss

    L(theta) = sum_i pi_i sum_j P_ij (-log softmax_j(g(theta; i)))

and its gradient sum_i pi_i sum_j (softmax_j(g(theta; i)) - P_ij) dg_j(theta; i)/dtheta,
vectorised over arrays of parameters.

For k = 2 and logits (0, f(theta; x)) this is exactly the binary loss of MODELS.md section 2
(softmax_1(0, f) = sigma(f)), which the tests check against :class:`flowlab.NumericModel`.

>>> chain = KStateChain([[0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.0, 1 / 3, 2 / 3]])
>>> [round(float(v), 6) for v in chain.stationary]
[0.222222, 0.444444, 0.333333]
>>> chain.has_zero_transitions, chain.optimal_logits is None
(True, True)
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import sympy as sp

from flowlab.engine.checks import finite_array, format_point, integer, real_number, require_finite
from flowlab.engine.errors import FlowlabInputError
from flowlab.systems.markov.models import TOKEN, param_symbol

#: Rows of a kernel may miss 1 by this much; they are then renormalised exactly.
ROW_SUM_TOL = 1e-9
#: Kernel files larger than this are refused (a kernel file is a small table).
MAX_KERNEL_FILE_BYTES = 16 * 1024 * 1024

_ZERO_NOTE = (
    "the kernel has zero transition probabilities: the optimal logits log P(x, .) are -infinite there, "
    "so the entropy rate is an infimum that no finite logits reach"
)


def entropy(probs, axis=-1):
    """Shannon entropy -sum p log p in nats along ``axis``, with 0 log 0 = 0."""
    probs = np.asarray(probs, dtype=np.float64)
    safe = np.where(probs > 0, probs, 1.0)
    return -np.sum(np.where(probs > 0, probs * np.log(safe), 0.0), axis=axis)


# ----------------------------------------------------------------------------------------------
# Chains
# ----------------------------------------------------------------------------------------------


def _as_kernel_array(kernel) -> np.ndarray:
    """A float64 copy of ``kernel``, refusing strings, booleans, ragged rows and wrong shapes."""
    try:
        raw = np.asarray(kernel)
    except (TypeError, ValueError) as exc:
        raise FlowlabInputError(
            f"the kernel must be a k x k array of probabilities; its rows have different lengths ({exc})"
        ) from None
    if raw.dtype.kind not in "iuf":
        raise FlowlabInputError(
            f"the kernel must contain real numbers only, got an array of dtype {raw.dtype} "
            "(check for strings, booleans, None or rows of different lengths)"
        )
    if raw.ndim != 2 or raw.shape[0] != raw.shape[1]:
        raise FlowlabInputError(f"the kernel must be a square 2-D array (k x k), got shape {raw.shape}")
    k = raw.shape[0]
    if k < 2:
        raise FlowlabInputError(f"a chain needs at least 2 states, got a {k} x {k} kernel")
    return np.array(raw, dtype=np.float64)


def _reachable(adjacency: np.ndarray, start: int) -> np.ndarray:
    """Boolean mask of the states reachable from ``start`` (breadth-first search)."""
    seen = np.zeros(adjacency.shape[0], dtype=bool)
    seen[start] = True
    frontier = [start]
    while frontier:
        nxt = np.flatnonzero(adjacency[frontier].any(axis=0) & ~seen)
        seen[nxt] = True
        frontier = nxt.tolist()
    return seen


def _check_irreducible(P: np.ndarray) -> None:
    """Every state must reach every other: state 0 reaches all and all reach state 0."""
    adjacency = P > 0
    forward = _reachable(adjacency, 0)
    backward = _reachable(adjacency.T, 0)
    if forward.all() and backward.all():
        return
    if not forward.all():
        detail = f"state(s) {np.flatnonzero(~forward).tolist()} cannot be reached from state 0"
    else:
        detail = f"state 0 cannot be reached from state(s) {np.flatnonzero(~backward).tolist()}"
    raise FlowlabInputError(
        f"the kernel is reducible: {detail}. Every state must be reachable from every other "
        "(a block-diagonal kernel, or one with an absorbing state, describes several chains "
        "or no unique stationary law)"
    )


def _validate_kernel(kernel) -> np.ndarray:
    P = _as_kernel_array(kernel)
    if not np.all(np.isfinite(P)):
        bad = np.argwhere(~np.isfinite(P))[0].tolist()
        raise FlowlabInputError(f"the kernel contains NaN or infinite values (first at row {bad[0]}, column {bad[1]})")
    if np.any(P < 0) or np.any(P > 1):
        i, j = np.argwhere((P < 0) | (P > 1))[0].tolist()
        raise FlowlabInputError(f"kernel entries must lie in [0, 1]; entry ({i}, {j}) is {P[i, j]!r}")
    sums = P.sum(axis=1)
    off = np.abs(sums - 1.0)
    if np.any(off > ROW_SUM_TOL):
        i = int(np.argmax(off))
        raise FlowlabInputError(
            f"every row of the kernel must sum to 1 (within {ROW_SUM_TOL:g}); row {i} sums to {sums[i]!r}"
        )
    P = P / sums[:, None]
    _check_irreducible(P)
    return P


def _stationary_law(P: np.ndarray) -> np.ndarray:
    """pi with pi P = pi and sum(pi) = 1, from the full-rank system [P^T - I; 1^T] pi = [0; 1].

    For an irreducible kernel the null space of P^T - I is spanned by pi and 1^T pi != 0, so the
    stacked system has a unique (least-squares exact) solution; one power step polishes it.
    """
    k = P.shape[0]
    A = np.vstack([P.T - np.eye(k), np.ones((1, k))])
    rhs = np.zeros(k + 1)
    rhs[-1] = 1.0
    pi, *_ = np.linalg.lstsq(A, rhs, rcond=None)
    if np.any(pi < -1e-10) or not np.all(np.isfinite(pi)):
        raise FlowlabInputError(f"could not compute a non-negative stationary law for this kernel (got {pi.tolist()})")
    pi = np.clip(pi, 0.0, None)
    pi = pi @ P
    pi = pi / pi.sum()
    residual = np.max(np.abs(pi @ P - pi))
    if residual > 1e-10:
        raise FlowlabInputError(f"the stationary law of this kernel is ill-conditioned (residual {residual:.3g})")
    return pi


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class KStateChain:
    """A first-order Markov chain on k >= 2 states with kernel ``P[i, j] = P(next = j | current = i)``.

    The kernel is validated (square, finite, entries in [0, 1], rows summing to 1 within 1e-9 and
    then renormalised, irreducible) and stored read-only. Zero entries are allowed but flagged
    (:attr:`has_zero_transitions`): the optimal logits are then infinite.

    >>> chain = KStateChain.from_binary(0.5, 0.8)
    >>> round(chain.unigram_loss, 4), round(chain.entropy_rate, 4)
    (0.6663, 0.619)
    """

    kernel: np.ndarray
    _stationary: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        P = _readonly(_validate_kernel(self.kernel))
        object.__setattr__(self, "kernel", P)
        object.__setattr__(self, "_stationary", _readonly(_stationary_law(P)))

    def __eq__(self, other):
        if not isinstance(other, KStateChain):
            return NotImplemented
        return self.kernel.shape == other.kernel.shape and bool(np.array_equal(self.kernel, other.kernel))

    def __hash__(self):
        return hash((self.k, self.kernel.tobytes()))

    @classmethod
    def from_binary(cls, p, q) -> KStateChain:
        """The binary chain P = [[1-p, p], [q, 1-q]] of MODELS.md section 1."""
        p, q = real_number(p, "p"), real_number(q, "q")
        return cls(np.array([[1 - p, p], [q, 1 - q]]))

    @classmethod
    def from_file(cls, path) -> KStateChain:
        """The chain whose kernel is stored in a JSON or CSV file (see :func:`load_kernel`)."""
        return cls(load_kernel(path))

    @property
    def k(self) -> int:
        """The number of states."""
        return int(self.kernel.shape[0])

    @property
    def stationary(self) -> np.ndarray:
        """The stationary law pi (pi P = pi, sum 1); sequences start from it."""
        return self._stationary

    @property
    def has_zero_transitions(self) -> bool:
        """True when some P[i, j] = 0: the optimal logits are then infinite."""
        return bool(np.any(self.kernel == 0))

    @property
    def entropy_rate(self) -> float:
        """Bigram (optimal) loss sum_x pi_x H(P(x, .)), with 0 log 0 = 0."""
        return float(self.stationary @ entropy(self.kernel, axis=1))

    @property
    def unigram_loss(self) -> float:
        """Loss of predicting pi whatever the past: H(pi)."""
        return float(entropy(self.stationary))

    @property
    def optimal_logits(self) -> np.ndarray | None:
        """log P (row x = the logits of the next token after x, each row up to a constant).

        None when the kernel has zero entries (the optimal logits are then infinite).
        """
        if self.has_zero_transitions:
            return None
        return np.log(self.kernel)

    def sample(self, n_sequences: int, length: int, seed: int) -> np.ndarray:
        """Sequences started from pi: an integer array of shape (n_sequences, length).

        Inverse-CDF sampling, vectorised over sequences; the dtype is int8 for k <= 128.
        """
        n_sequences, length = integer(n_sequences, "n_sequences"), integer(length, "length")
        seed = integer(seed, "seed", None)
        k = self.k
        dtype = np.int8 if k <= 128 else np.int16 if k <= 32768 else np.int32
        rng = np.random.default_rng(seed)
        uniforms = rng.random((n_sequences, length))

        def cdf(rows):
            c = np.cumsum(rows, axis=-1)
            c[..., -1] = 1.0  # exact: u < 1 always picks a state
            return c

        # Inverse CDF: the state is the number of cumulative probabilities <= u (zero-probability
        # states have c_j = c_{j-1} and are never picked).
        x = np.empty((n_sequences, length), dtype=dtype)
        x[:, 0] = np.searchsorted(cdf(self.stationary), uniforms[:, 0], side="right")
        row_cdf = cdf(self.kernel)
        for n in range(1, length):
            x[:, n] = np.sum(row_cdf[x[:, n - 1]] <= uniforms[:, n, None], axis=1)
        return x

    def as_dict(self) -> dict:
        out = {
            "k": self.k,
            "kernel": self.kernel.tolist(),
            "stationary": self.stationary.tolist(),
            "entropy_rate": self.entropy_rate,
            "unigram_loss": self.unigram_loss,
            "has_zero_transitions": self.has_zero_transitions,
        }
        if self.has_zero_transitions:
            out["note"] = _ZERO_NOTE
        return out


# ----------------------------------------------------------------------------------------------
# Kernel files
# ----------------------------------------------------------------------------------------------


def _reject_constant(name):
    raise ValueError(f"{name} is not allowed (entries must be finite numbers)")


def _rows_from_json(text: str, path: Path) -> list[list[float]]:
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise FlowlabInputError(f"{path} is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        if "kernel" not in data:
            raise FlowlabInputError(
                f"{path}: a JSON object must have a 'kernel' key holding a list of rows, got keys {sorted(data)}"
            )
        data = data["kernel"]
    if not isinstance(data, list) or not data or not all(isinstance(row, list) for row in data):
        raise FlowlabInputError(
            f"{path}: the kernel must be a non-empty list of rows (lists of numbers), e.g. [[0.9, 0.1], [0.2, 0.8]]"
        )
    rows = []
    for i, row in enumerate(data):
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise FlowlabInputError(f"{path}: entry ({i}, {j}) must be a number, got {v!r}")
            # a long integer overflows float(); a long decimal such as 1e400 parses as inf
            if isinstance(v, int) and v.bit_length() > 1000 or isinstance(v, float) and not math.isfinite(v):
                shown = v if isinstance(v, float) else f"an integer with {len(str(abs(v)))} digits"
                raise FlowlabInputError(f"{path}: entry ({i}, {j}) must be a probability in [0, 1], got {shown}")
        rows.append([float(v) for v in row])
    return rows


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _rows_from_csv(text: str, path: Path) -> list[list[float]]:
    rows = []
    for line_no, cells in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not cells or all(not c.strip() for c in cells):
            continue  # blank line
        row = []
        for col, cell in enumerate(cells, start=1):
            cell = cell.strip()
            if not _NUMBER.fullmatch(cell):
                raise FlowlabInputError(
                    f"{path}, line {line_no}, column {col}: {cell!r} is not a finite number "
                    "(a kernel CSV has comma-separated numeric rows and no header)"
                )
            row.append(float(cell))
        rows.append(row)
    if not rows:
        raise FlowlabInputError(f"{path} holds no rows (expected comma-separated rows of probabilities)")
    return rows


def load_kernel(path) -> np.ndarray:
    """Read a kernel from a small ``.json`` or ``.csv`` file (plain parsing: no eval, no pickle).

    JSON: a list of rows ``[[0.9, 0.1], [0.2, 0.8]]`` or an object ``{"kernel": [[...], ...]}``.
    CSV: one comma-separated row of numbers per line, no header. The result is a float64 array;
    probability checks are left to :class:`KStateChain`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise FlowlabInputError(f"cannot read the kernel file {path}: the extension must be .json or .csv")
    try:
        size = path.stat().st_size
        if size > MAX_KERNEL_FILE_BYTES:
            raise FlowlabInputError(f"{path} is {size} bytes; a kernel file must be under {MAX_KERNEL_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowlabInputError(f"cannot read the kernel file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise FlowlabInputError(f"{path} is not UTF-8 text") from None
    rows = _rows_from_json(text, path) if suffix == ".json" else _rows_from_csv(text, path)
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise FlowlabInputError(f"{path}: the rows have different lengths {[len(r) for r in rows]}; the kernel must be k x k")
    return np.array(rows, dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


def _as_expr(value, j: int) -> sp.Expr:
    if isinstance(value, sp.Basic):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return sp.Integer(value) if isinstance(value, int) else sp.Float(value)
    raise FlowlabInputError(
        f"logit {j} must be a SymPy expression or a finite number, got {type(value).__name__} {value!r} "
        "(text is not parsed here: build the expression with SymPy)"
    )


@dataclass(frozen=True)
class KStateModel:
    """k softmax logits g_j(theta; x) over named parameters, x in {0, ..., k-1} the current token.

    ``logits[j]`` is the logit of "the next token is j". Symbols are matched by name: the
    parameters become real symbols (:func:`flowlab.systems.markov.models.param_symbol`) and ``x`` becomes
    :data:`flowlab.systems.markov.models.TOKEN`; any other symbol is an error.
    """

    name: str
    params: tuple[str, ...]
    logits: tuple[sp.Expr, ...]
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise FlowlabInputError(f"the model name must be a non-empty string, got {self.name!r}")
        if isinstance(self.params, str):
            raise FlowlabInputError(f"params must be a sequence of names, got the string {self.params!r}")
        params = tuple(self.params)
        if not params or not all(isinstance(n, str) and n.isidentifier() for n in params):
            raise FlowlabInputError(f"params must be a non-empty sequence of identifiers, got {params!r}")
        if len(set(params)) != len(params):
            raise FlowlabInputError(f"parameter names must be distinct: {params}")
        if TOKEN.name in params:
            raise FlowlabInputError(f"{TOKEN.name!r} is the current token and cannot be a parameter name")
        if isinstance(self.logits, (str, sp.Basic)):
            raise FlowlabInputError("logits must be a sequence of k expressions, one per next token")
        logits = tuple(_as_expr(g, j) for j, g in enumerate(self.logits))
        if len(logits) < 2:
            raise FlowlabInputError(f"a k-state model needs k >= 2 logits (one per next token), got {len(logits)}")
        canonical = {n: param_symbol(n) for n in params}
        canonical[TOKEN.name] = TOKEN
        clean = []
        for j, g in enumerate(logits):
            undefined = g.atoms(sp.core.function.AppliedUndef)
            if undefined:
                raise FlowlabInputError(f"logit {j} of {self.name!r} uses undefined functions {sorted(map(str, undefined))}")
            stray = sorted(str(s) for s in g.free_symbols if s.name not in canonical)
            if stray:
                raise FlowlabInputError(
                    f"logit {j} of {self.name!r} uses unknown symbols {stray}; "
                    f"allowed: parameters {list(params)} and the token {TOKEN.name!r}"
                )
            g = g.xreplace({s: canonical[s.name] for s in g.free_symbols if s != canonical[s.name]})
            clean.append(g)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "logits", tuple(clean))

    @property
    def k(self) -> int:
        """The number of states (= the number of logits)."""
        return len(self.logits)

    @property
    def symbols(self) -> tuple[sp.Symbol, ...]:
        return tuple(param_symbol(n) for n in self.params)

    def jacobian(self) -> tuple[tuple[sp.Expr, ...], ...]:
        """dg_j/dtheta_m as a k x n_params table (a.e. derivatives: DiracDelta terms dropped)."""
        rows = []
        for j, g in enumerate(self.logits):
            row = []
            for s in self.symbols:
                d = sp.diff(g, s)
                if d.has(sp.DiracDelta):
                    d = d.replace(sp.DiracDelta, lambda *args: sp.S.Zero)
                if d.has(sp.Derivative, sp.Subs):
                    raise FlowlabInputError(f"logit {j} of {self.name!r} has no usable symbolic derivative in {s}: {d}")
                row.append(d)
            rows.append(tuple(row))
        return tuple(rows)


@dataclass(frozen=True)
class CompiledKStateModel:
    """g(theta..., x) -> k logits and J(theta..., x) -> k * n_params derivatives (row-major j, m)."""

    model: KStateModel
    logits: Callable
    jacobian: Callable


@cache
def compile_kstate(model: KStateModel) -> CompiledKStateModel:
    """Compile ``model`` once per process through flowlab's single lambdify call site.

    The chain does not enter the compiled code: P and pi act linearly on the log-softmax of the
    logits, which NumPy does stably, so one compilation serves every chain with the same k.
    """
    from flowlab.symbolic import compile as compiler  # looked up at call time (a test counts the calls)

    args = [*model.symbols, TOKEN]
    jac = model.jacobian()
    return CompiledKStateModel(
        model=model,
        logits=compiler.compile_exprs(args, model.logits),
        jacobian=compiler.compile_exprs(args, [d for row in jac for d in row]),
    )


def _stack(values, shape) -> np.ndarray:
    """:func:`~flowlab.symbolic.compile.stack_outputs`, refusing complex values (a user logit such as sqrt(u) at u < 0)."""
    from flowlab.symbolic.compile import stack_outputs

    if any(np.iscomplexobj(v) for v in values):
        raise FlowlabInputError("a logit evaluated to a complex number; logits must be real")
    return stack_outputs(values, shape)


def log_softmax(logits, axis=-1) -> np.ndarray:
    """log softmax with max subtraction (finite for any finite logits)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - np.max(logits, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


class KStateNumeric:
    """A compiled :class:`KStateModel` bound to a :class:`KStateChain`, vectorised over theta.

    ``theta`` has shape (..., n_params) in the model's parameter order.

    >>> import sympy as sp
    >>> c = sp.symbols("c0 c1")
    >>> model = KStateModel("const", ("c0", "c1"), c)
    >>> chain = KStateChain.from_binary(0.2, 0.3)
    >>> nm = KStateNumeric(model, chain)
    >>> abs(float(nm.loss(np.log(chain.stationary))) - chain.unigram_loss) < 1e-15
    True
    """

    def __init__(self, model: KStateModel, chain: KStateChain):
        if not isinstance(model, KStateModel):
            raise FlowlabInputError(f"model must be a KStateModel, got {type(model).__name__}")
        if not isinstance(chain, KStateChain):
            raise FlowlabInputError(f"chain must be a KStateChain, got {type(chain).__name__}")
        if model.k != chain.k:
            raise FlowlabInputError(f"model {model.name!r} has {model.k} logits but the chain has {chain.k} states")
        self.model = model
        self.chain = chain
        self.params = model.params
        self.compiled = compile_kstate(model)

    def _theta(self, theta):
        theta = finite_array(theta, "theta", last_dim=len(self.params))
        return np.moveaxis(theta, -1, 0), theta.shape[:-1]

    def logits(self, theta) -> np.ndarray:
        """g_j(theta; i) as an array of shape (..., k, k): axis -2 is the state i, axis -1 is j."""
        cols, shape = self._theta(theta)
        with np.errstate(all="ignore"):
            G = np.stack([_stack(self.compiled.logits(*cols, float(i)), shape) for i in range(self.model.k)], -2)
        if not np.all(np.isfinite(G)):
            bad = (~np.isfinite(G)).reshape(-1, self.model.k, self.model.k).any(axis=0)
            i, j = np.argwhere(bad)[0].tolist()
            raise FlowlabInputError(
                f"logit {j} of {self.model.name!r} at state {i} is not finite for some theta "
                "(NaN or overflow); the loss is undefined there"
            )
        return G

    def log_probabilities(self, theta) -> np.ndarray:
        """log softmax_j(g(theta; i)), shape (..., k, k)."""
        return log_softmax(self.logits(theta), axis=-1)

    def probabilities(self, theta) -> np.ndarray:
        """The model's next-token distributions softmax_j(g(theta; i)), shape (..., k, k)."""
        return np.exp(self.log_probabilities(theta))

    def loss(self, theta) -> np.ndarray:
        """L(theta) = sum_i pi_i sum_j P_ij (-log softmax_j(g(theta; i)))."""
        logp = self.log_probabilities(theta)
        return -np.einsum("i,ij,...ij->...", self.chain.stationary, self.chain.kernel, logp)

    def _jacobian(self, theta) -> np.ndarray:
        """dg_j(theta; i)/dtheta_m, shape (..., k_i, k_j, n_params)."""
        cols, shape = self._theta(theta)
        k, n = self.model.k, len(self.params)
        with np.errstate(all="ignore"):
            J = np.stack([_stack(self.compiled.jacobian(*cols, float(i)), shape) for i in range(k)], -2)
        J = J.reshape(shape + (k, k, n))
        if not np.all(np.isfinite(J)):
            raise FlowlabInputError(f"a derivative of the logits of {self.model.name!r} is not finite for some theta")
        return J

    def gradient(self, theta) -> np.ndarray:
        """dL/dtheta = sum_i pi_i sum_j (softmax_j(g(theta; i)) - P_ij) dg_j(theta; i)/dtheta."""
        residual = self.probabilities(theta) - self.chain.kernel
        return np.einsum("i,...ij,...ijm->...m", self.chain.stationary, residual, self._jacobian(theta))

    def evaluate(self, theta) -> dict:
        """Everything at one point, JSON-ready."""
        theta = finite_array(theta, "theta")
        if theta.shape != (len(self.params),):
            raise FlowlabInputError(
                f"a point of model {self.model.name!r} has {len(self.params)} coordinates {list(self.params)}, "
                f"got shape {theta.shape}"
            )
        try:
            loss = float(self.loss(theta))
            grad = self.gradient(theta)
        except FlowlabInputError as exc:  # name the point: it is the user's
            raise FlowlabInputError(f"at {format_point(self.params, theta)}: {exc}") from None
        require_finite({"loss": loss, "gradient": grad}, self.params, theta)
        return {
            "status": "ok",
            "message": f"loss and gradient at {format_point(self.params, theta)}",
            "model": self.model.name,
            "k": self.model.k,
            "chain": self.chain.as_dict(),
            "params": list(self.params),
            "point": dict(zip(self.params, theta.tolist())),
            "loss": loss,
            "excess_loss": loss - self.chain.entropy_rate,
            "optimal_loss": self.chain.entropy_rate,
            "levels": {"unigram": self.chain.unigram_loss},
            "gradient": dict(zip(self.params, grad.tolist())),
            "gradient_norm": float(np.linalg.norm(grad)),
            "next_token_probabilities": self.probabilities(theta).tolist(),
        }
