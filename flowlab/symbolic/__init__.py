"""SymPy machinery shared by the systems; imports no system, plot, report or command line.

``parse``     the whitelisting expression parser (a caller's :class:`~flowlab.symbolic.parse.Vocabulary`)
``special``   special functions with stable NumPy twins (softplus, sigmoid, the profiled logit zeta0)
``compile``   the single compile site (``compile_exprs``) and the names its code uses
``simplify``  canonical forms after differentiation (``tidy``) and proofs that an expression vanishes
``latex``     sections of equations, ``tex`` and their Markdown
"""
