"""System ``ntp_order`` (seed 003): next-token prediction with query-dependent partial orders.

A **reconstruction** (MODELS.md §7) of Huang, Liang, Yang, "Non-asymptotic Convergence of Training
Transformers for Next-token Prediction" (NeurIPS 2024), whose full text is not available here:
data (collocation + per-query DAGs), the one-layer attention + feed-forward model with exact
gradients, the max-margin targets, the two-stage normalised gradient descent of Algorithm 1 and
the measurements of its claims; ``system``: its losses on the engine's System protocol
(``NtpOrderSystem``).
"""

from .data import (
    GENERATE_DEFAULTS,
    LIMITS,
    OrderDataset,
    find_cycle,
    from_dict,
    generate,
    greatest,
    load,
    save,
    transitive_closure,
)
from .measure import CHECKS, Fit, NtpOrderResult, StageSummary, accuracy, fit_rate, run_experiment, summarise_stage
from .model import STAGE2_LOSSES, Batch, attention, collocation_loss, logits, loss_and_grads, loss_floor, make_batch, predict
from .system import NtpOrderSystem
from .targets import Targets, kq_pairs, max_margin_targets, ov_target, ov_target_qp
from .training import DEFAULTS, METHODS, StageTrace, TwoStageRun, direction_error, run_stage, train_two_stage

__all__ = [
    "GENERATE_DEFAULTS", "LIMITS", "OrderDataset", "find_cycle", "from_dict", "generate", "greatest", "load", "save",
    "transitive_closure", "CHECKS", "Fit", "NtpOrderResult", "StageSummary", "accuracy", "fit_rate", "run_experiment",
    "summarise_stage", "STAGE2_LOSSES", "Batch", "attention", "collocation_loss", "logits", "loss_and_grads",
    "loss_floor", "make_batch", "predict", "NtpOrderSystem", "Targets", "kq_pairs", "max_margin_targets", "ov_target",
    "ov_target_qp",
    "DEFAULTS", "METHODS", "StageTrace", "TwoStageRun", "direction_error", "run_stage", "train_two_stage",
]
