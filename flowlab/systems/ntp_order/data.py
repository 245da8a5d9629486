"""Data of the ``ntp_order`` system: a vocabulary, a collocation and query-dependent partial orders.

**Reconstruction** (this project's, MODELS.md §7): the paper (Huang, Liang, Yang, NeurIPS 2024,
arXiv 2409.17335) is not readable here; its abstract and reviews describe *realizable* training
sets built from a *collocation* n: V -> V and *query-dependent partial orders*. This module
follows that description with the attention-SVM notion of an optimal token (Tarzanagh et al. 2023):

- tokens are the integers 0..K-1 with one-hot embeddings (d = K);
- a sentence is a sequence of tokens whose last token is the query q;
- for every query q a strict partial order >_q is given by the edges of a DAG (a > b), and the
  order is the DAG's transitive closure; a cycle is an input error naming the cycle;
- a training sentence is realizable when one token x* of it is >_q-greater than every other
  distinct token of it (its unique greatest token); its label is n(x*).

The generator draws a hidden total order per query (a random permutation), samples sentences,
takes x* from the hidden order and keeps as the DAG of each query exactly the pairs (x*, x) its
training sentences witness (so the DAG is acyclic by construction and contains nothing the data
does not show). *Unseen implied* sentences have an optimum implied only by the transitive
closure (every pair (x*, x) is in the closure, at least one is not a DAG edge); *unseen not
implied* sentences have no greatest token in the closure, and carry the hidden order's optimum as
a reference only (a model cannot be credited for it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from flowlab.engine.checks import integer
from flowlab.engine.errors import FlowlabInputError

#: Size limits of a dataset (generated or loaded).
LIMITS = {"vocab": 128, "sentences": 100_000, "length": 64, "file_bytes": 50_000_000}
#: Defaults of :func:`generate` (the quoted experiment has |V| = 20).
GENERATE_DEFAULTS = {"vocab": 20, "sentences": 200, "min_len": 3, "max_len": 6, "unseen": 200, "seed": 0}


def _check_token(v, K: int, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < K:
        raise FlowlabInputError(f"{where}: unknown token {v!r} (tokens are the integers 0..{K - 1})")
    return int(v)


def find_cycle(edges, K: int) -> list[int] | None:
    """A directed cycle [a, b, ..., a] among ``edges`` (pairs a > b) over tokens 0..K-1, or None."""
    succ: list[list[int]] = [[] for _ in range(K)]
    for a, b in edges:
        succ[a].append(b)
    state = [0] * K  # 0 new, 1 on the stack, 2 done
    for root in range(K):
        if state[root]:
            continue
        stack, path = [(root, iter(succ[root]))], [root]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state[nxt] == 1:
                return path[path.index(nxt):] + [nxt]
            elif state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))
                path.append(nxt)
    return None


def transitive_closure(orders, K: int) -> np.ndarray:
    """Boolean array C[q, a, b] = (a >_q b) in the transitive closure of each query's DAG.

    A cycle in any query's edges raises :class:`FlowlabInputError` naming the query and the cycle.
    """
    C = np.zeros((K, K, K), dtype=bool)
    for q, edges in enumerate(orders):
        for a, b in edges:
            C[q, a, b] = True
    for k in range(K):  # Warshall, vectorised over queries
        C |= C[:, :, k, None] & C[:, None, k, :]
    bad = np.flatnonzero(np.einsum("qaa->q", C.astype(np.int8)))
    if bad.size:
        q = int(bad[0])
        cycle = find_cycle(orders[q], K)
        raise FlowlabInputError(
            f"the order of query {q} has a cycle {' > '.join(map(str, cycle))}: a strict partial order must be a DAG"
        )
    return C


def greatest(sentence, closure_q: np.ndarray) -> int | None:
    """The unique token of ``sentence`` greater than every other distinct token of it, or None."""
    tokens = sorted(set(sentence))
    for x in tokens:
        if all(closure_q[x, y] for y in tokens if y != x):
            return x
    return None


@dataclass(frozen=True)
class OrderDataset:
    """A realizable dataset (validated on construction; see the module docstring).

    ``orders[q]`` are the DAG edges (a, b), a >_q b; ``sentences`` end with their query;
    ``unseen_implied`` / ``unseen_not_implied`` are held-out sentences (may be empty);
    ``not_implied_reference`` is the optimum of each not-implied sentence under the generator's
    hidden order (None when unknown).
    """

    vocab: int
    collocation: tuple[int, ...]
    orders: tuple[tuple[tuple[int, int], ...], ...]
    sentences: tuple[tuple[int, ...], ...]
    unseen_implied: tuple[tuple[int, ...], ...] = ()
    unseen_not_implied: tuple[tuple[int, ...], ...] = ()
    not_implied_reference: tuple[int, ...] | None = None
    seed: int | None = None

    def __post_init__(self):
        K = integer(self.vocab, "vocab", 2, LIMITS["vocab"])
        if len(self.collocation) != K:
            raise FlowlabInputError(f"the collocation must map each of the {K} tokens, got {len(self.collocation)} entries")
        for v, nv in enumerate(self.collocation):
            _check_token(nv, K, f"collocation of token {v}")
        if len(self.orders) != K:
            raise FlowlabInputError(f"give one order (a list of edges) per query token: {K} lists, got {len(self.orders)}")
        for q, edges in enumerate(self.orders):
            for a, b in edges:
                _check_token(a, K, f"order of query {q}")
                _check_token(b, K, f"order of query {q}")
        if not self.sentences:
            raise FlowlabInputError("the training set has no sentences")
        for name in ("sentences", "unseen_implied", "unseen_not_implied"):
            group = getattr(self, name)
            if len(group) > LIMITS["sentences"]:
                raise FlowlabInputError(f"{name}: at most {LIMITS['sentences']} sentences, got {len(group)}")
            for i, s in enumerate(group):
                if not 1 <= len(s) <= LIMITS["length"]:
                    raise FlowlabInputError(f"{name}[{i}]: a sentence has 1..{LIMITS['length']} tokens, got {len(s)}")
                for v in s:
                    _check_token(v, K, f"{name}[{i}]")
        self._validate_optima()

    def _validate_optima(self) -> None:
        C = self.closure
        for i, s in enumerate(self.sentences):
            if greatest(s, C[s[-1]]) is None:
                raise FlowlabInputError(
                    f"sentences[{i}] = {list(s)} is not realizable: no token is greater than all others under the "
                    f"order of its query {s[-1]}"
                )
        for i, s in enumerate(self.unseen_implied):
            x = greatest(s, C[s[-1]])
            if x is None:
                raise FlowlabInputError(f"unseen_implied[{i}] = {list(s)}: the closure of the order of query {s[-1]} "
                                        "implies no greatest token")
        for i, s in enumerate(self.unseen_not_implied):
            if greatest(s, C[s[-1]]) is not None:
                raise FlowlabInputError(f"unseen_not_implied[{i}] = {list(s)}: the closure does imply its optimum "
                                        "(move it to unseen_implied)")
        ref = self.not_implied_reference
        if ref is not None:
            if len(ref) != len(self.unseen_not_implied):
                raise FlowlabInputError("not_implied_reference needs one token per unseen_not_implied sentence")
            for i, (x, s) in enumerate(zip(ref, self.unseen_not_implied)):
                if _check_token(x, self.vocab, f"not_implied_reference[{i}]") not in s:
                    raise FlowlabInputError(f"not_implied_reference[{i}] = {x} is not a token of its sentence")

    @cached_property
    def closure(self) -> np.ndarray:
        """C[q, a, b] = a >_q b (transitive closure of the query's DAG)."""
        return transitive_closure(self.orders, self.vocab)

    def optima(self, kind: str = "train") -> np.ndarray:
        """x* of each sentence of ``kind`` (train | implied | not_implied: the reference, -1 if unknown)."""
        if kind == "not_implied":
            ref = self.not_implied_reference
            return np.array(ref if ref is not None else [-1] * len(self.unseen_not_implied), dtype=np.int64)
        group = self.group(kind)
        C = self.closure
        return np.array([greatest(s, C[s[-1]]) for s in group], dtype=np.int64)

    def labels(self, kind: str = "train") -> np.ndarray:
        """n(x*) of each sentence of ``kind`` (-1 where the optimum is unknown)."""
        x = self.optima(kind)
        n = np.asarray(self.collocation, dtype=np.int64)
        return np.where(x >= 0, n[np.maximum(x, 0)], -1)

    def group(self, kind: str):
        groups = {"train": self.sentences, "implied": self.unseen_implied, "not_implied": self.unseen_not_implied}
        if kind not in groups:
            raise FlowlabInputError(f"unknown sentence group {kind!r}: use one of {', '.join(groups)}")
        return groups[kind]

    def as_dict(self) -> dict:
        return {
            "format": "flowlab.ntp_order/1",
            "vocab": self.vocab,
            "collocation": list(self.collocation),
            "orders": [[list(e) for e in edges] for edges in self.orders],
            "sentences": [list(s) for s in self.sentences],
            "unseen_implied": [list(s) for s in self.unseen_implied],
            "unseen_not_implied": [list(s) for s in self.unseen_not_implied],
            "not_implied_reference": None if self.not_implied_reference is None else list(self.not_implied_reference),
            "seed": self.seed,
        }


def from_dict(obj) -> OrderDataset:
    """A dataset from its JSON form (validated; see :meth:`OrderDataset.as_dict`)."""
    if not isinstance(obj, dict):
        raise FlowlabInputError("a dataset is a JSON object with vocab, collocation, orders, sentences")
    allowed = {"format", "vocab", "collocation", "orders", "sentences", "labels", "unseen_implied",
               "unseen_not_implied", "not_implied_reference", "seed"}
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise FlowlabInputError(f"unknown dataset fields {unknown}; allowed: {sorted(allowed)}")
    missing = [k for k in ("vocab", "collocation", "orders", "sentences") if k not in obj]
    if missing:
        raise FlowlabInputError(f"the dataset lacks the fields {missing}")

    def seqs(name, depth):
        value = obj.get(name, [])
        if not isinstance(value, list) or not all(isinstance(s, list) for s in value):
            raise FlowlabInputError(f"{name} must be a list of lists")
        if depth == 2:
            for q, edges in enumerate(value):
                if not all(isinstance(e, list) and len(e) == 2 for e in edges):
                    raise FlowlabInputError(f"orders[{q}] must be a list of edges [a, b] (a > b under query {q})")
            return tuple(tuple(tuple(e) for e in edges) for edges in value)
        return tuple(tuple(s) for s in value)

    ref = obj.get("not_implied_reference")
    if ref is not None and not isinstance(ref, list):
        raise FlowlabInputError("not_implied_reference must be a list of tokens or null")
    collocation = obj["collocation"]
    if not isinstance(collocation, list):
        raise FlowlabInputError("collocation must be a list: collocation[v] = n(v)")
    seed = obj.get("seed")
    data = OrderDataset(
        vocab=obj["vocab"], collocation=tuple(collocation), orders=seqs("orders", 2), sentences=seqs("sentences", 1),
        unseen_implied=seqs("unseen_implied", 1), unseen_not_implied=seqs("unseen_not_implied", 1),
        not_implied_reference=None if ref is None else tuple(ref), seed=seed if isinstance(seed, int) else None,
    )
    if "labels" in obj:
        labels = obj["labels"]
        if not isinstance(labels, list) or len(labels) != len(data.sentences):
            raise FlowlabInputError("labels must be a list with one label per training sentence")
        derived = data.labels("train")
        for i, (y, d) in enumerate(zip(labels, derived)):
            if y != d:
                raise FlowlabInputError(f"sentences[{i}] is not realizable with label {y!r}: its optimal token's "
                                        f"collocation is {int(d)}")
    return data


def load(path) -> OrderDataset:
    """Read and validate a dataset JSON file (at most LIMITS['file_bytes'] bytes)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > LIMITS["file_bytes"]:
            raise FlowlabInputError(f"{path} is {size} bytes; datasets are limited to {LIMITS['file_bytes']}")
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FlowlabInputError(f"cannot read the dataset {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, and integers of over 4300 digits
        raise FlowlabInputError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise FlowlabInputError(f"{path}: the JSON is nested too deeply for a dataset") from None
    try:
        return from_dict(obj)
    except FlowlabInputError as exc:
        raise FlowlabInputError(f"{path}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise FlowlabInputError(f"{path}: malformed dataset ({exc})") from None


def save(data: OrderDataset, path) -> Path:
    """Write ``data`` as JSON, atomically."""
    from flowlab.engine.io import atomic_write_text, to_json

    return atomic_write_text(path, to_json(data.as_dict()))


def _sample_sentence(rng, K: int, q: int, min_len: int, max_len: int) -> tuple[int, ...]:
    length = int(rng.integers(min_len, max_len + 1))
    others = rng.choice(np.delete(np.arange(K), q), size=length - 1, replace=False)
    return tuple(int(v) for v in others) + (q,)


def generate(vocab: int = 20, sentences: int = 200, seed: int = 0, *, min_len: int = 3, max_len: int = 6,
             unseen: int = 200) -> OrderDataset:
    """A seeded realizable dataset (module docstring): queries taken in turn, distinct tokens per sentence.

    ``unseen`` is the number of unseen sentences wanted of each kind (fewer when the closure leaves
    fewer: at most 20 random draws per wanted sentence).
    """
    K = integer(vocab, "vocab", 3, LIMITS["vocab"])
    N = integer(sentences, "sentences", 1, LIMITS["sentences"])
    lo = integer(min_len, "min_len", 2, K)
    hi = integer(max_len, "max_len", lo, K)
    M = integer(unseen, "unseen", 0, LIMITS["sentences"])
    rng = np.random.default_rng(integer(seed, "seed", 0, None))
    collocation = tuple(int(v) for v in rng.permutation(K))
    rank = np.array([rng.permutation(K) for _ in range(K)])  # rank[q, v]: position of v in q's hidden order

    def hidden_best(s):
        return min(s, key=lambda v: rank[s[-1], v])

    train, edges = [], [set() for _ in range(K)]
    for i in range(N):
        s = _sample_sentence(rng, K, i % K, lo, hi)
        x = hidden_best(s)
        edges[s[-1]].update((x, v) for v in s if v != x)
        train.append(s)
    orders = tuple(tuple(sorted(e)) for e in edges)
    C = transitive_closure(orders, K)
    seen = {(s[-1], frozenset(s)) for s in train}
    implied, not_implied, ref = [], [], []
    for _ in range(20 * M):
        if len(implied) >= M and len(not_implied) >= M:
            break
        s = _sample_sentence(rng, K, int(rng.integers(K)), lo, hi)
        if (s[-1], frozenset(s)) in seen:
            continue
        x = hidden_best(s)
        pairs = [(x, v) for v in s if v != x]
        if all(C[s[-1], a, b] for a, b in pairs):
            if any(p not in edges[s[-1]] for p in pairs) and len(implied) < M:
                implied.append(s)
                seen.add((s[-1], frozenset(s)))
        elif len(not_implied) < M:
            not_implied.append(s)
            ref.append(x)
            seen.add((s[-1], frozenset(s)))
    return OrderDataset(K, collocation, orders, tuple(train), tuple(implied), tuple(not_implied), tuple(ref), seed)
