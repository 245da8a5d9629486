"""The Markov systems on the engine's :class:`~flowlab.engine.system.System` protocol.

:class:`MarkovSystem` is a binary chain (p, q) with a logit model (``ew``, ``ewb``, ``ewa``, ``ewab``
or a user logit), in the long-context limit (:class:`~flowlab.systems.markov.numeric.NumericModel`)
or over a finite context of N positions (:class:`~flowlab.systems.markov.context.ContextModel`,
Hessian by central differences). :class:`KStateSystem` is a k-state chain with softmax logits
(:class:`~flowlab.systems.markov.kstate.KStateNumeric`). Their references: the optimal loss is the
chain's entropy rate H, the named non-global level ``unigram`` is the loss h(pi) of a model that
ignores the current token.

>>> from flowlab import MarkovChain, get_model
>>> ref = MarkovSystem(get_model("ew"), MarkovChain(0.5, 0.8), symbolic_levels=False).reference()
>>> ref.optimal_loss == MarkovChain(0.5, 0.8).entropy_rate, list(ref.levels)
(True, ['unigram'])
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from flowlab.engine.checks import UNDEFINED_HINT, FlowlabInputError, finite_array
from flowlab.engine.system import Reference, SystemBase, difference_hessian
from flowlab.systems.markov.chain import NEAR_DEGENERATE_GAP, MarkovChain, gap_tolerance
from flowlab.systems.markov.defaults import PRESET_NAMES
from flowlab.systems.markov.numeric import ModelSpec, NumericModel, spec_facts

if TYPE_CHECKING:
    from flowlab.systems.markov.models import Model

#: Gap values |D0 - D*| below this (relative) are the global level, not a non-global one.
_SAME_GAP = 1e-12
_ALL_GLOBAL = "p + q = 1: unigram and bigram coincide (D* = 0), every critical point is global (the verdict is vacuous)"
_IID_KSTATE = ("every row of the kernel is pi (i.i.d. tokens): unigram and bigram coincide, every critical point "
               "is global (the verdict is vacuous)")


def box_independent_levels(model: Model, chain: MarkovChain) -> tuple[dict[str, float] | None, int, str]:
    """({name: value} of every non-global critical value, largest component dimension, how); None if unknown.

    From :func:`flowlab.systems.markov.critical_symbolic.critical_levels`: the gap values D0 of the
    components of {grad D = 0} on the whole parameter space; each non-global one gives the level
    ell(D0) (``unigram`` for D0 = 0, else ``D0=<value>``). SymPy: seconds per model, cached per process.
    """
    from flowlab.systems.markov.critical_symbolic import critical_levels

    try:
        lev = critical_levels(model, chain.pi1)
    except Exception as exc:  # any SymPy failure means: no box-independent level
        return None, 0, f"no box-independent level: the symbolic analysis failed ({type(exc).__name__})"
    values = lev.values_at(chain.p, chain.q)
    if values is None:
        return None, 0, f"no box-independent level: {lev.how if not lev.solved else 'a special chain'}"
    dstar = chain.optimal_gap
    d0 = [v for v in values if abs(v - dstar) > _SAME_GAP * max(1.0, abs(dstar))]
    prof = NumericModel(model.with_profiled_bias(), chain)
    levels = {}
    for v in d0:
        name, value = "unigram" if v == 0 else f"D0={v:.12g}", float(prof.profiled_loss(np.array(v))[0])
        levels[name] = min(value, levels.get(name, value))
    how = f"ell(D0) over {len(d0)} gap value(s) D0 = {', '.join(f'{v:.6g}' for v in d0) or 'none'}: {lev.how}"
    if model.bias == "free":
        how += "; with the bias free the critical points are the lifts b = b*(theta) (dL/db = 0 iff b = b*)"
    return levels, lev.dimension, how


def _level_interval(ell, dstar: float, level: float, reach: float):
    """(lo, hi) with ell(lo) = ell(hi) = level around the minimiser ``dstar`` of a convex ``ell``; None when
    ell(dstar) >= level; an end is None when ell stays below ``level`` up to |D| = ``reach`` on that side. Each end
    is bracketed by doubling steps and bisected down to adjacent floats (no SciPy: a warm process skips its
    0.3-0.9 s import); it is the first float beyond the crossing, where ell >= level."""
    if not abs(dstar) < reach or not ell(dstar) < level:
        return None
    ends = []
    for sign in (-1.0, 1.0):
        inner, step = dstar, 1.0
        while True:
            outer = dstar + sign * step
            outer = outer if abs(outer) < reach else sign * reach
            if ell(outer) >= level:
                while True:  # ell(inner) < level <= ell(outer)
                    mid = 0.5 * (inner + outer)
                    if mid in (inner, outer):
                        break
                    inner, outer = (inner, mid) if ell(mid) >= level else (mid, outer)
                ends.append(outer)
                break
            if abs(outer) >= reach:  # below level all the way to sign * reach (convexity)
                ends.append(None)
                break
            inner, step = outer, 2 * step
    return tuple(ends)


def nonglobal_level(model: Model, chain: MarkovChain) -> tuple[float | None, int, str]:
    """(L_ng, largest component dimension, how) from box-independent analysis; L_ng None if unknown, inf if none."""
    levels, dim, how = box_independent_levels(model, chain)
    if levels is None:
        return None, dim, how
    return min(levels.values(), default=math.inf), dim, how


def _degeneracy(gap: float, degenerate: bool, all_global: str, gap_name: str) -> dict:
    """``all_global`` / ``unresolved`` of a reference from the gap between the unigram and the optimal loss."""
    if degenerate:
        return {"all_global": all_global}
    if gap < NEAR_DEGENERATE_GAP:
        return {"unresolved": f"nearly degenerate chain: {gap_name} = {gap:.3g} is below what float64 resolves "
                              f"({NEAR_DEGENERATE_GAP:g}), so losses cannot tell the unigram set from the bigram set"}
    return {}


def _gap_test(system, bounds: tuple, rows: np.ndarray) -> np.ndarray:
    """The test of :meth:`MarkovSystem.loss_below` with ``bounds`` (lo, hi, band_lo, band_hi, inner_lo, inner_hi)."""
    lo, hi, band_lo, band_hi, inner_lo, inner_hi = bounds
    D = system._gap(np.asarray(rows, dtype=np.float64))
    out = np.full(D.shape, -1, dtype=np.int8)
    out[(D > inner_lo) & (D < inner_hi)] = 1
    if lo is not None:
        out[D < lo - band_lo] = 0
    if hi is not None:
        out[D > hi + band_hi] = 0
    return out


def _rebuild_markov(model, chain, context, symbolic_levels, fast_profiled, reference) -> MarkovSystem:
    """A :class:`MarkovSystem` from its pickled parts (:meth:`MarkovSystem.__reduce__`)."""
    system = MarkovSystem(model, chain, context, symbolic_levels=symbolic_levels)
    system.fast_profiled, system._reference = fast_profiled, reference
    return system


class MarkovSystem(SystemBase):
    """A logit model on a binary chain as a :class:`~flowlab.engine.system.System`.

    ``context=N``: the exact finite-context loss over positions 1..N instead of the long-context
    limit (invariants and the observable ``D`` stay those of the long-context model).
    ``symbolic_levels``: the reference lists every non-global critical value found on the whole
    parameter space by SymPy (:func:`box_independent_levels`, ``complete`` when solved); without
    it (cheap, what a single flow needs) only the unigram level, ``complete=False``.
    ``model`` may be a :class:`~flowlab.systems.markov.numeric.ModelSpec` (what the command line names): with a
    warm on-disk cache the system then works without SymPy (compiled code, the fused gradient and the levels
    come from the cache); the attribute ``model`` builds the Model (SymPy) on first use.
    """

    name = "markov"

    def __init__(self, model: Model | ModelSpec, chain: MarkovChain, context: int | None = None, *,
                 symbolic_levels: bool = True):
        if not isinstance(model, ModelSpec):
            from flowlab.systems.markov.models import Model

            if not isinstance(model, Model):
                raise FlowlabInputError(f"model must be a flowlab Model or ModelSpec, got {type(model).__name__}")
        if not isinstance(chain, MarkovChain):
            raise FlowlabInputError(f"chain must be a MarkovChain, got {type(chain).__name__}")
        self.chain, self.context = chain, context
        self._made_of = model  # what pickling rebuilds it from (see __reduce__)
        #: the compiled model (from the on-disk cache, without SymPy, when ``model`` is a warm ModelSpec)
        self.numeric = NumericModel(model, chain)
        self.params = self.numeric.params
        #: the profiled-bias fast paths (:meth:`loss_below`, the fused gradient); False: log-domain code only
        self.fast_profiled = self.numeric.compiled.bias == "profiled" and context is None
        self.symbolic_levels = symbolic_levels and context is None
        self._reference = None
        self._context = None
        if context is not None:
            from flowlab.systems.markov.context import ContextModel

            self._context = ContextModel(self.model, chain, context)
            self.cost_hint = f"use a shorter context than N = {context}"

    @property
    def model(self) -> Model:
        """The model (built with SymPy on first use when the system was made from a :class:`ModelSpec`)."""
        return self.numeric.model

    def __reduce__(self):
        """Pickled as what it was made of (model, chain, context; a preset model as its name), rebuilt when
        unpickled, e.g. in a labelling process: the compiled functions do not pickle, and the rebuild takes
        them from the on-disk cache. The fast-path switch and a computed reference travel along."""
        made = self._made_of
        if not isinstance(made, ModelSpec) and made.name in PRESET_NAMES:
            from flowlab.systems.markov.models import get_model

            made = ModelSpec(preset=made.name) if get_model(made.name) == made else made
        return _rebuild_markov, (made, self.chain, self.context, self.symbolic_levels, self.fast_profiled,
                                 self._reference)

    def loss(self, theta) -> np.ndarray:
        return self.numeric.loss(theta) if self._context is None else self._context.loss(theta)

    def gradient(self, theta) -> np.ndarray:
        if self._context is not None:
            return self._context.gradient(theta)
        point = np.asarray(theta, dtype=np.float64)
        if point.shape == (len(self.params),) and np.isfinite(point).all():  # one point (a flow's step): the
            chain = self.chain                                                # compiled code directly, 9x faster
            return np.array(self.numeric.compiled.gradient(*point, chain.p, chain.q), dtype=np.float64)
        # the fused path is compiled with the model (numeric.CompiledModel.fused_gradient), so a process working
        # from the on-disk cache uses it without SymPy
        if point.ndim == 2 and self.fast_profiled and self.numeric.compiled.fused_gradient is not None:
            return self._fused_gradient(finite_array(point, "theta", last_dim=len(self.params)))
        return self.numeric.gradient(theta)

    def _gap(self, rows: np.ndarray) -> np.ndarray:
        """D at the rows of a (k, n) array (NaN where undefined, no warnings)."""
        with np.errstate(all="ignore"):
            out = self.numeric.compiled.gap(*rows.T, self.chain.p, self.chain.q)[0]
        return np.broadcast_to(np.asarray(out, dtype=np.float64), (rows.shape[0],))

    def _fused_gradient(self, rows: np.ndarray) -> np.ndarray:
        """The gradient of a profiled model at the rows of a (k, n) array, sigma(D + zeta0) from the bias
        quadratic (:func:`flowlab.symbolic.twins.profiled_sigmoid1`) where |D| <= PROFILED_FAST_RANGE,
        the log-domain code elsewhere."""
        from flowlab.symbolic.twins import PROFILED_FAST_RANGE, profiled_sigmoid1

        p, q = self.chain.p, self.chain.q
        D = self._gap(rows)
        inside = np.abs(D) <= PROFILED_FAST_RANGE
        if not inside.all():
            out = self.numeric.gradient(rows)
            if inside.any():
                out[inside] = self._fused_gradient(rows[inside])
            return out
        with np.errstate(all="ignore"):
            values = self.numeric.compiled.fused_gradient(*rows.T, p, q, profiled_sigmoid1(D, p, q))
        out = np.empty(rows.shape)
        for j, v in enumerate(values):
            out[:, j] = v
        return out

    def loss_below(self, level: float):
        """A test of L(theta) < ``level`` through the gap D alone, for the engine's decisions; None when not
        applicable (finite context, free bias, ``fast_profiled`` off, level not above H).

        L(theta) = ell(D(theta)) and ell is convex (the minimum over the bias of a cross-entropy jointly
        convex in the two logits) with its minimum H at D*, so {L < level} = {lo < D < hi}, the ends found
        once by bracketing and bisection on the log-domain ell. The test returns per row 1 (below), 0 (not
        below) or -1 (not told: D within 1e-9 (1 + |end|) of an end, beyond a side with no end up to
        |D| = PROFILED_FAST_RANGE, or undefined); the engine evaluates the loss on the -1 rows.
        """
        from flowlab.symbolic.twins import PROFILED_FAST_RANGE

        if self._context is not None or not self.fast_profiled or not math.isfinite(level):
            return None
        ends = _level_interval(lambda d: float(self.numeric.profiled_loss(np.array(d))[0]), self.chain.optimal_gap,
                               level, PROFILED_FAST_RANGE)
        if ends is None:
            return None
        lo, hi = ends
        band_lo = 1e-9 * (1 + abs(lo)) if lo is not None else 0.0
        band_hi = 1e-9 * (1 + abs(hi)) if hi is not None else 0.0
        inner_lo = lo + band_lo if lo is not None else -PROFILED_FAST_RANGE
        inner_hi = hi - band_hi if hi is not None else PROFILED_FAST_RANGE
        return partial(_gap_test, self, (lo, hi, band_lo, band_hi, inner_lo, inner_hi))  # picklable: sent to
                                                                                       # labelling processes

    def hessian(self, theta) -> np.ndarray:
        if self._context is None:
            return self.numeric.hessian(theta)
        return difference_hessian(self._context.gradient, theta)

    def invariants(self, theta) -> dict[str, np.ndarray]:
        return self.numeric.invariants(theta)

    def observables(self, theta) -> dict[str, np.ndarray]:
        """``D``: the long-context logit gap f(theta; 1) - f(theta; 0) (the optimum has D = D*)."""
        with np.errstate(all="ignore"):
            return {"D": self.numeric.gap(theta)}

    def undefined_hint(self, theta) -> str:
        """Why the loss may be undefined at ``theta`` (the logit gap there when it is not finite)."""
        which = "" if self.context is None else f"finite context N = {self.context}: "
        with np.errstate(all="ignore"):
            gap = float(self.numeric.gap(theta))
        if not np.isfinite(gap):
            return f"{which}the logit gap D = f(theta; 1) - f(theta; 0) is {gap} there: " + UNDEFINED_HINT
        return which + UNDEFINED_HINT

    def reference(self) -> Reference:
        """H, h(pi1) (and with ``symbolic_levels`` every box-independent non-global level); cached."""
        if self._reference is None:
            self._reference = self._make_reference()
        return self._reference

    def _make_reference(self) -> Reference:
        chain = self.chain
        levels, complete, dim = {"unigram": chain.unigram_loss}, False, 0
        source = ("H (the entropy rate, the least loss of any logit: reached where D = D*) and h(pi1) (the unigram "
                  "loss, the critical value of the set D = 0) of the chain in closed form")
        if self.context is not None:
            source += (f"; the finite-context loss (N = {self.context}) is judged on the same levels: H is the least "
                       "expected cross-entropy of every position (the chain starts stationary)")
        elif self.symbolic_levels and not chain.degenerate:
            found, found_dim, how = self._levels()
            if found is not None:
                levels, complete, dim = found, True, found_dim
            source += "; " + how
        if not complete:
            source += "; other non-global critical values are not looked for"
        degeneracy = _degeneracy(chain.loss_gap, chain.degenerate, _ALL_GLOBAL, "h(pi1) - H")
        return Reference(optimal_loss=chain.entropy_rate, levels=levels, loss_tol=chain.loss_tolerance, source=source,
                         complete=complete, set_dimension=dim, **degeneracy)

    def _levels(self) -> tuple[dict[str, float] | None, int, str]:
        """:func:`box_independent_levels` of the model on the chain; for a system made from a :class:`ModelSpec`
        through the on-disk cache (:func:`~flowlab.systems.markov.numeric.spec_facts`: no SymPy when warm)."""
        spec, chain = self.numeric.spec, self.chain
        if spec is None:
            return box_independent_levels(self.model, chain)
        def valid(facts) -> bool:
            found, dim, how = facts
            return ((found is None or all(isinstance(k, str) and isinstance(v, float) for k, v in found.items()))
                    and isinstance(dim, int) and isinstance(how, str))

        found, dim, how = spec_facts("markov-levels", spec, {"p": chain.p, "q": chain.q},
                                     lambda: box_independent_levels(self.model, chain), valid)
        return found, dim, how

    def describe(self) -> dict:
        return {"system": "markov", "model": self.numeric.name, "chain": self.chain.as_dict(), "context": self.context}


class KStateSystem(SystemBase):
    """A softmax logit model on a k-state chain (:class:`~flowlab.systems.markov.kstate.KStateNumeric`).

    Loss and gradient are NaN where the logits are not finite (the engine names such points);
    the Hessian is by central differences of the exact gradient.
    """

    name = "markov"

    def __init__(self, model, chain):
        from flowlab.systems.markov.kstate import KStateNumeric

        self.numeric = KStateNumeric(model, chain)
        self.model, self.chain = model, chain
        self.params = tuple(model.params)
        self._reference = None

    def _or_nan(self, fn, theta, trailing: tuple):
        theta = np.asarray(theta, dtype=np.float64)
        try:
            return fn(theta)
        except FlowlabInputError:  # logits not finite somewhere: undefined there (vectorised callers get NaN)
            return np.full(theta.shape[:-1] + trailing, np.nan)

    def loss(self, theta) -> np.ndarray:
        return self._or_nan(self.numeric.loss, theta, ())

    def gradient(self, theta) -> np.ndarray:
        return self._or_nan(self.numeric.gradient, theta, (len(self.params),))

    def undefined_hint(self, theta) -> str:
        try:
            self.numeric.gradient(np.asarray(theta, dtype=np.float64))
        except FlowlabInputError as exc:
            return f"{exc}: {UNDEFINED_HINT}"
        return UNDEFINED_HINT

    def loss_gap(self) -> float:
        """H(pi) - H: the mutual information sum_i pi_i KL(P(i, .) || pi) of consecutive tokens, term by term."""
        P, pi = self.chain.kernel, self.chain.stationary
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0) / pi[None, :]), 0.0)
        return max(0.0, float(pi @ terms.sum(axis=1)))

    def reference(self) -> Reference:
        """Optimal loss H (an infimum when the kernel has zero transitions), the unigram level H(pi); cached."""
        if self._reference is None:
            chain, gap = self.chain, self.loss_gap()
            source = ("H (the entropy rate, the least loss of any logits: reached where softmax(g(theta; i)) = P(i, .); "
                      "the minima of a model that cannot express P are non-global for the chain, 'local') and H(pi) "
                      "(the unigram loss: any logits that ignore the current token at their optimum) of the kernel; "
                      "the model's other non-global critical values are not looked for (no k-state critical-set "
                      "analysis)")
            if chain.has_zero_transitions:
                source += "; the kernel has zero transitions, so H is an infimum that finite logits never reach"
            iid = bool(np.all(chain.kernel == chain.kernel[0]))
            self._reference = Reference(optimal_loss=chain.entropy_rate, levels={"unigram": chain.unigram_loss},
                                        loss_tol=gap_tolerance(gap), source=source, complete=False,
                                        **_degeneracy(gap, iid, _IID_KSTATE, "H(pi) - H"))
        return self._reference

    def describe(self) -> dict:
        return {"system": "markov", "model": self.model.name, "chain": self.chain.as_dict(), "context": None}
