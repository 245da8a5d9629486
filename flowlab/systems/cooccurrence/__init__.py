"""System ``cooccurrence``: the word co-occurrence transformer of Yang et al. (NeurIPS 2024).

MODELS.md §6. Modules: ``data`` (Def. 2.1, Assumption 2.3), ``trajectory`` (the common output of
every engine and its observables), ``full`` (the model of Eq. 1, its gradient, GD and gradient flow),
``gram`` (the exact Gram flow), ``experiments`` (compare, scaling), ``system`` (the full model on the
engine's System protocol: ``CooccurrenceSystem``).
"""

from .data import CooccurrenceData, sample, training_set, type_counts
from .experiments import (
    CompareResult,
    ScalingResult,
    compare,
    scaling,
    training_check,
)
from .full import (
    PAPER_INIT,
    Weights,
    direct_loss_and_grad,
    gradient_descent,
    gradient_flow,
    init_weights,
    loss_and_grad,
    per_type_losses,
)
from .gram import GramState, gram_flow, gram_rhs, grams_from_weights, wishart_grams
from .system import CooccurrenceSystem
from .trajectory import Trajectory, first_correct_time, forward, loss_gradients, observables

__all__ = [
    "PAPER_INIT",
    "CompareResult",
    "CooccurrenceData",
    "CooccurrenceSystem",
    "GramState",
    "ScalingResult",
    "Trajectory",
    "Weights",
    "compare",
    "direct_loss_and_grad",
    "first_correct_time",
    "forward",
    "gradient_descent",
    "gradient_flow",
    "gram_flow",
    "gram_rhs",
    "grams_from_weights",
    "init_weights",
    "loss_and_grad",
    "loss_gradients",
    "observables",
    "per_type_losses",
    "sample",
    "scaling",
    "training_check",
    "training_set",
    "type_counts",
    "wishart_grams",
]
