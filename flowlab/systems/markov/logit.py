"""User-typed logits of the Markov system: f(theta; x[, m]) through the generic whitelisting parser.

The names a logit may use are the parameters (each refused if :func:`~flowlab.systems.markov.symbols.check_param_name`
reserves it), the token ``x`` (:data:`~flowlab.systems.markov.symbols.TOKEN`) and, for attention
models, the attention average ``m`` (:data:`~flowlab.systems.markov.symbols.ATTENTION`); the grammar and the
limits are those of :mod:`flowlab.symbolic.parse`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp

from flowlab.symbolic.parse import Vocabulary, parse_expression, parse_names, validate_names
from flowlab.systems.markov.symbols import ATTENTION, BIAS, TOKEN, check_param_name, param_symbol


def parse_params(text: str) -> tuple[str, ...]:
    """Split a comma-separated list of parameter names, e.g. ``"e, w, a"`` -> ``("e", "w", "a")``.

    Each name must be an ASCII identifier that is not reserved (:func:`flowlab.systems.markov.symbols.reserved_names`:
    Python keywords, ``x`` the token, ``m`` the attention average, ``b`` the bias, the derivation's
    symbols such as ``p``, ``q`` and ``D``, and function names the compiler uses).
    """
    return parse_names(text, check_param_name)


def parse_logit(text: str, params: Sequence[str] | str, *, allow_attention: bool = False) -> sp.Expr:
    """Parse a user-typed logit f(theta; x) into a SymPy expression, through a whitelist only.

    ``params`` are the parameter names (a sequence, or a comma-separated string as accepted by
    :func:`parse_params`); they become :func:`~flowlab.systems.markov.symbols.param_symbol` symbols. ``x`` is
    :data:`~flowlab.systems.markov.symbols.TOKEN`; ``m`` (:data:`~flowlab.systems.markov.symbols.ATTENTION`)
    is accepted only with ``allow_attention=True``. Any other name, any function outside
    :data:`flowlab.symbolic.parse.ALLOWED_FUNCTIONS` and any other syntax raise
    :class:`~flowlab.engine.errors.FlowlabInputError`.
    """
    names = parse_params(params) if isinstance(params, str) else validate_names(params, check_param_name)
    symbols = {name: param_symbol(name) for name in names}
    symbols[TOKEN.name] = TOKEN
    if allow_attention:
        symbols[ATTENTION.name] = ATTENTION
    described = f"parameters {', '.join(names)}, the token x" + (", the attention average m" if allow_attention else "")
    refused = {
        ATTENTION.name: "the attention average 'm' is allowed only for attention models (allow_attention=True)",
        BIAS: f"unknown name 'b' (the bias is added by the pipeline, do not write it); allowed names: {described}",
    }
    return parse_expression(text, Vocabulary(symbols, described, refused), what="logit")
