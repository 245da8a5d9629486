"""One gradient-flow trajectory of a logit model on a binary chain: the engine's flow on a MarkovSystem.

The trajectory, its budget and the verdict are the engine's (:mod:`flowlab.engine.trajectory`); this
module binds them to :class:`~flowlab.systems.markov.system.MarkovSystem`, refuses the degenerate chain
p + q = 1 unless allowed, and keeps the model and the chain on the result (:class:`MarkovFlowResult`).
The verdict: ``global`` (the loss equals the entropy rate within the chain's gap-scaled tolerance),
``local`` (a non-global critical point that is a minimum: positive definite Hessian, or positive
semi-definite with a higher-order test on small spheres), or ``undetermined`` (not converged, a
saddle-type end point, or a nearly degenerate chain whose losses cannot tell the sets apart).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from flowlab.engine.trajectory import (  # noqa: F401  (re-exported: the flow's options and result type)
    MAX_SECONDS,
    MAX_STEPS,
    METHODS,
    TYPICAL_EVALUATIONS,
    FlowResult,
    classify_endpoint,
)
from flowlab.engine.trajectory import gradient_flow as engine_flow
from flowlab.systems.markov.chain import MarkovChain
from flowlab.systems.markov.numeric import ModelSpec
from flowlab.systems.markov.system import MarkovSystem

if TYPE_CHECKING:
    from flowlab.systems.markov.models import Model


@dataclass(frozen=True)
class MarkovFlowResult(FlowResult):
    """A :class:`~flowlab.engine.trajectory.FlowResult` that also keeps the model and the chain (for figures;
    the model as given: a :class:`~flowlab.systems.markov.numeric.ModelSpec` when the flow was given one)."""

    model: Model | ModelSpec | None = None
    chain: MarkovChain | None = None


def gradient_flow(
    model: Model | ModelSpec,
    chain: MarkovChain,
    theta0,
    *,
    context: int | None = None,
    allow_degenerate: bool = False,
    **options,
) -> MarkovFlowResult:
    """Integrate the gradient flow of ``model`` on ``chain`` from ``theta0``.

    ``options`` are those of :func:`flowlab.engine.trajectory.gradient_flow` (t_max, grad_tol, method,
    rtol, atol, loss_tol, hess_tol, max_steps, max_seconds, progress). ``context=N`` uses the exact
    finite-context loss over positions 1..N (:class:`flowlab.systems.markov.context.ContextModel`)
    instead of the long-context limit. Raises :class:`FlowlabInputError` for p + q = 1 unless
    ``allow_degenerate`` (the verdict global/unigram is then vacuous and the result says so), for
    bad options, and when the loss or the gradient is not finite at ``theta0``. A
    :class:`~flowlab.systems.markov.numeric.ModelSpec` (what the command line names) is compiled from the
    on-disk cache when it is there: a warm ``flowlab flow`` imports no SymPy.
    """
    if not allow_degenerate:
        chain.require_nondegenerate("which critical set a flow reaches")
    result = engine_flow(MarkovSystem(model, chain, context, symbolic_levels=False), theta0, **options)
    return MarkovFlowResult(**{f.name: getattr(result, f.name) for f in fields(FlowResult)}, model=model, chain=chain)
