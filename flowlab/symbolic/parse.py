"""A whitelisting parser for user-typed expressions (MODELS.md section 5), knowing no system.

A user states an expression in names the caller allows (a :class:`Vocabulary`: for the Markov
logits of :mod:`flowlab.systems.markov.logit`, named parameters, the token ``x`` and the attention
average ``m``), e.g. ``e**2*(1 + 2*w*Abs(w))*x - e**2/2``. The text is never handed to Python or
to SymPy's string parsers: a small hand-written lexer and a recursive-descent parser build SymPy
objects directly, and anything outside the whitelist is refused with a
:class:`~flowlab.engine.errors.FlowlabInputError` naming the problem, its column and what is allowed.

Grammar (``**`` is right-associative and binds tighter than a unary sign on its left, as in
Python, so ``-x**2`` is ``-(x**2)`` and ``2**-1`` is ``1/2``)::

    expr      := term (("+" | "-") term)*
    term      := unary (("*" | "/") unary)*
    unary     := ("+" | "-") unary | power
    power     := atom ("**" unary)?
    atom      := NUMBER | NAME | FUNCTION "(" args ")" | "(" expr ")"
    args      := expr ("," expr)*
    Piecewise := "Piecewise" "(" branch ("," branch)* ")"
    branch    := "(" expr "," condition ")"
    condition := "True" | expr ("<" | "<=" | ">" | ">=") expr

Numbers are integers, decimals and scientific notation (``1e-3``, ``2.5E+2``); they become
exact SymPy rationals (``0.5`` is ``Rational(1, 2)``), so typing a preset's logit reproduces
it exactly. There are no named constants (``E`` and ``pi`` are unknown names); ``^`` is refused
with a hint to write ``**``. A Piecewise condition is ``True`` or one comparison (no ``&``/``|``,
no chained comparisons, no Piecewise inside it).

Resource limits keep hostile input cheap: at most MAX_LENGTH characters, MAX_DEPTH nesting
levels (a clean error, never a RecursionError), MAX_CALL_DEPTH nested function calls, numeric
exponents of magnitude at most MAX_EXPONENT, no number beyond MAX_DIGITS digits (``9**9**9**9``
is refused before SymPy computes anything), and constant subexpressions at most
MAX_CONSTANT_HEIGHT deep (SymPy evaluates those numerically). Infinite, undefined and non-real
constants (``1/0``, ``log(0)``, ``sqrt(-2)``) are refused too.
"""

from __future__ import annotations

import keyword
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NoReturn

import sympy as sp

from flowlab.engine.errors import FlowlabInputError

#: Longest accepted expression text (and parameter list), in characters.
MAX_LENGTH = 2000
#: Deepest accepted nesting (parentheses, function calls, unary signs and ``**`` chains).
MAX_DEPTH = 100
#: Deepest accepted nesting of function calls (SymPy's automatic evaluation of deep nests is slow).
MAX_CALL_DEPTH = 10
#: Deepest accepted constant subexpression (no symbols) fed to a further operation: SymPy evaluates
#: nested constants such as ((2 + (2 + 1/7)**(1/3))**(1/3) ...) numerically, at a cost that explodes with depth.
MAX_CONSTANT_HEIGHT = 8
#: Largest accepted magnitude of a numeric exponent.
MAX_EXPONENT = 1000
#: Numerators and denominators of numeric constants are kept below 10**MAX_DIGITS.
MAX_DIGITS = 100
#: Most arguments of one function call (Max, Min) or branches of one Piecewise.
MAX_ARGS = 100
#: Longest accepted parameter name.
MAX_NAME_LENGTH = 32

#: Whitelisted functions: name -> (SymPy constructor, allowed numbers of arguments).
#: ``log(y, b)`` is the logarithm of y to base b; ``Heaviside(y, h0)`` sets the value at 0.
#: ``Piecewise`` takes (expression, condition) pairs and is parsed by its own rule.
ALLOWED_FUNCTIONS = MappingProxyType(
    {
        "Abs": (sp.Abs, range(1, 2)),
        "sign": (sp.sign, range(1, 2)),
        "Max": (sp.Max, range(2, MAX_ARGS + 1)),
        "Min": (sp.Min, range(2, MAX_ARGS + 1)),
        "exp": (sp.exp, range(1, 2)),
        "log": (sp.log, range(1, 3)),
        "sqrt": (sp.sqrt, range(1, 2)),
        "tanh": (sp.tanh, range(1, 2)),
        "Heaviside": (sp.Heaviside, range(1, 3)),
        "Piecewise": (sp.Piecewise, range(1, MAX_ARGS + 1)),
    }
)

_COMPARISONS = MappingProxyType({"<": sp.Lt, "<=": sp.Le, ">": sp.Gt, ">=": sp.Ge})
_BINARY = MappingProxyType({"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv})
_OPERATORS = ("**", "<=", ">=", "*", "/", "+", "-", "(", ")", ",", "<", ">")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_NUMBER = re.compile(r"(\d+)?(?:\.(\d*))?(?:[eE]([+-]?\d+))?", re.ASCII)
_DIGITS = "0123456789"
#: Non-ASCII characters that look like something allowed, with what to type instead.
_LOOKALIKES = {**dict.fromkeys("\u2212\u2013\u2014", "type '-' for minus"),
               **dict.fromkeys("\u00b2\u00b3\u00b9\u2070\u2074\u2075\u2076\u2077\u2078\u2079",
                               "superscripts are not powers: write ** for powers, e.g. e**2"),
               **dict.fromkeys("\u00d7\u22c5\u00b7", "type '*' for a product"), "\u00f7": "type '/' for a division"}
_NUMBER_RUN = re.compile(r"[A-Za-z0-9_.]*")
_NUMBER_TAIL = re.compile(r"[A-Za-z0-9_.]")
_CONSTANT_KEYWORDS = ("True", "False", "None")
_FORBIDDEN_CHARS = {
    "^": "'^' is XOR in Python, not a power; write ** for powers, e.g. x**2",
    "'": "strings are not allowed",
    '"': "strings are not allowed",
    "[": "subscripts and lists ('[') are not allowed",
    "]": "subscripts and lists (']') are not allowed",
    "{": "braces ('{') are not allowed",
    "}": "braces ('}') are not allowed",
    ":": "':' is not allowed (no lambdas, slices or statements)",
    "=": "'=' is not allowed; the comparisons < <= > >= may appear only in Piecewise conditions",
    "!": "'!' is not allowed; the comparisons < <= > >= may appear only in Piecewise conditions",
    "&": "combining conditions with '&' is not supported; use one comparison per Piecewise branch",
    "|": "combining conditions with '|' is not supported; use one comparison per Piecewise branch",
    "~": "'~' is not allowed",
    "@": "'@' (matrix product) is not allowed; use * for products",
    "%": "'%' is not allowed",
    "#": "comments ('#') are not allowed",
    "\\": "backslashes are not allowed",
    "`": "backquotes are not allowed",
    "$": "'$' is not allowed",
    "?": "'?' is not allowed",
}
_ALLOWED_TEXT = "numbers, names, + - * / ** ( ) , and < <= > >= inside Piecewise conditions"
_OPERAND = "a number, a name, a function call or '('"


class _Refusal(FlowlabInputError):
    """A refusal inside the parser; :func:`parse_expression` words it as ``invalid <what> at column <col>: ...``."""

    def __init__(self, col: int | None, message: str):
        super().__init__(message)
        self.col, self.message = col, message


def _fail(col: int | None, message: str) -> NoReturn:
    raise _Refusal(col, message)


def _indefinite(what: str) -> str:
    """'a logit', 'an expression'."""
    return f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"


@dataclass(frozen=True)
class Vocabulary:
    """The names an expression may use, as the caller (a system) defines them.

    ``symbols``: name -> SymPy symbol; ``described``: how the allowed names read in an error
    ("parameters e, w, the token x"); ``refused``: names with a special refusal (name -> the whole
    message), e.g. a symbol the system adds itself.
    """

    symbols: Mapping[str, sp.Symbol]
    described: str
    refused: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Token:
    kind: str  # "num", "name", "op" or "end"
    text: str
    col: int  # 1-based
    value: sp.Rational | None = None


def _too_many_digits(value: sp.Rational) -> bool:
    limit = 10**MAX_DIGITS
    return abs(int(value.p)) >= limit or int(value.q) >= limit


def _number_value(text: str, match: re.Match, col: int) -> sp.Rational:
    whole, frac, exponent = match.group(1) or "", match.group(2) or "", match.group(3)
    power = int(exponent) if exponent is not None else 0  # bounded: the text is at most MAX_LENGTH long
    if abs(power) > MAX_EXPONENT:
        _fail(col, f"the exponent of the number {text!r} is too large (at most {MAX_EXPONENT} in magnitude)")
    mantissa = int(whole + frac) if whole + frac else 0
    scale = power - len(frac)
    value = sp.Integer(mantissa * 10**scale) if scale >= 0 else sp.Rational(mantissa, 10 ** (-scale))
    if _too_many_digits(value):
        _fail(col, f"the number {text!r} is too large or too precise (at most {MAX_DIGITS} digits)")
    return value


class _Lexer:
    """Splits the text into tokens lazily, so that errors are reported in reading order."""

    def __init__(self, text: str, what: str):
        self.text = text
        self.a_what = _indefinite(what)
        self.pos = 0

    def next(self) -> _Token:
        text, n = self.text, len(self.text)
        while self.pos < n and text[self.pos] in " \t":
            self.pos += 1
        if self.pos >= n:
            return _Token("end", "", n + 1)
        i = self.pos
        col = i + 1
        c = text[i]
        if c in _DIGITS or (c == "." and i + 1 < n and text[i + 1] in _DIGITS):
            return self._number(i, col)
        if _NAME.match(c):
            name = _NAME.match(text, i).group()
            self.pos = i + len(name)
            if keyword.iskeyword(name) and name not in _CONSTANT_KEYWORDS:  # those get a clearer message in the parser
                _fail(col, f"the Python keyword {name!r} is not allowed; allowed: {_ALLOWED_TEXT}")
            return _Token("name", name, col)
        for op in _OPERATORS:
            if text.startswith(op, i):
                if op == "/" and text.startswith("//", i):
                    _fail(col, "floor division '//' is not allowed; use / for division")
                self.pos = i + len(op)
                return _Token("op", op, col)
        if c == ".":
            _fail(col, "'.' is not allowed here: no attribute access, and decimals need a digit (e.g. 0.5)")
        if ord(c) > 127:
            hint = f" ({_LOOKALIKES[c]})" if c in _LOOKALIKES else ""
            _fail(col, f"the non-ASCII character {c!r} (U+{ord(c):04X}) is not allowed{hint}; allowed: {_ALLOWED_TEXT}")
        if c in "\n\r":
            _fail(col, f"line breaks are not allowed: {self.a_what} is a single line")
        if not c.isprintable():
            _fail(col, f"control character {c!r} is not allowed")
        if c == ";":
            _fail(col, f"';' is not allowed: {self.a_what} is a single expression; allowed: {_ALLOWED_TEXT}")
        _fail(col, _FORBIDDEN_CHARS.get(c, f"character {c!r} is not allowed") + f"; allowed: {_ALLOWED_TEXT}")

    def _number(self, i: int, col: int) -> _Token:
        match = _NUMBER.match(self.text, i)
        end = match.end()
        if _NUMBER_TAIL.match(self.text, end):
            bad = _NUMBER_RUN.match(self.text, i).group()
            _fail(col, f"invalid number {bad!r} (numbers look like 3, 0.5, 1e-3; write products explicitly, e.g. 2*e)")
        self.pos = end
        text = match.group()
        return _Token("num", text, col, _number_value(text, match, col))


class _Parser:
    def __init__(self, text: str, vocabulary: Vocabulary, what: str):
        self.lexer = _Lexer(text, what)
        self.names = vocabulary.symbols
        self.vocabulary = vocabulary
        self.a_what = _indefinite(what)
        self.depth = 0
        self.call_depth = 0
        self.heights: dict = {}
        self.in_condition = 0
        self.tok = self.lexer.next()

    # -- helpers -------------------------------------------------------------------------------

    def advance(self) -> _Token:
        old = self.tok
        self.tok = self.lexer.next()
        return old

    def at(self, op: str) -> bool:
        return self.tok.kind == "op" and self.tok.text == op

    def allowed_names(self) -> str:
        return f"allowed names: {self.vocabulary.described}"

    @staticmethod
    def allowed_functions() -> str:
        return "allowed functions: " + ", ".join(ALLOWED_FUNCTIONS)

    def unexpected(self, expected: str):
        tok = self.tok
        if tok.kind == "end":
            _fail(tok.col, f"unexpected end of input: expected {expected}")
        if tok.kind == "op" and tok.text in _COMPARISONS:
            _fail(
                tok.col,
                f"unexpected comparison {tok.text!r}: a single comparison may only form a whole Piecewise condition, "
                "without parentheses, e.g. Piecewise((x, w < 0), (0, True))",
            )
        _fail(tok.col, f"unexpected {tok.text!r}: expected {expected}")

    def close(self, opening: _Token, what: str):
        if not self.at(")"):
            if self.tok.kind == "end":
                _fail(opening.col, "unbalanced parentheses: this '(' is never closed")
            self.unexpected(f"')' to close {what} opened at column {opening.col}")
        self.advance()

    def checked(self, value, col: int | None, what: str):
        """Refuse infinite, undefined, non-real or oversized constants in a freshly built node."""
        if value.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
            _fail(col, f"{what} is infinite or undefined")
        try:
            complex_constant = isinstance(value, sp.Expr) and value.is_number and value.is_extended_real is False
        except Exception as exc:  # SymPy's assumption system can fail on odd input
            _fail(col, f"{what} cannot be checked to be real ({type(exc).__name__} in SymPy)")
        if value.has(sp.I) or complex_constant:
            _fail(col, f"{what} is not real ({self.a_what} must be real)")
        if any(_too_many_digits(a) for a in value.atoms(sp.Rational)):
            _fail(col, f"{what} has a number with more than {MAX_DIGITS} digits")
        return value

    def constant_height(self, expr) -> int | None:
        """Height of the expression tree of a constant, or None when it contains a symbol (memoised)."""
        memo = self.heights
        stack = [(expr, False)]
        while stack:
            node, children_done = stack.pop()
            if node in memo:
                continue
            if not node.args:
                memo[node] = None if isinstance(node, sp.Symbol) else 0
            elif children_done:
                heights = [memo[arg] for arg in node.args]
                memo[node] = None if None in heights else 1 + max(heights)
            else:
                stack.append((node, True))
                stack.extend((arg, False) for arg in node.args if arg not in memo)
        return memo[expr]

    def operate(self, col: int, what: str, constructor, *args):
        """Apply a SymPy constructor after refusing constants too deeply nested to evaluate cheaply."""
        for part in (piece for arg in args for piece in (arg if isinstance(arg, tuple) else (arg,))):
            if not isinstance(part, sp.Rational):
                height = self.constant_height(part)
                if height is not None and height > MAX_CONSTANT_HEIGHT:
                    _fail(
                        col,
                        f"a constant (symbol-free) subexpression is nested more than {MAX_CONSTANT_HEIGHT} levels deep; "
                        "simplify the numeric constants",
                    )
        try:
            value = constructor(*args)
        except FlowlabInputError:  # pragma: no cover - constructors are SymPy's
            raise
        except Exception as exc:  # SymPy can fail in many ways (even internal assertions) on odd input
            _fail(col, f"{what} cannot be formed ({type(exc).__name__} in SymPy)")
        return value

    def build(self, col: int, what: str, constructor, *args):
        """:meth:`operate`, then :meth:`checked` on the result (for powers, functions and comparisons)."""
        return self.checked(self.operate(col, what, constructor, *args), col, what)

    # -- grammar -------------------------------------------------------------------------------

    def parse(self) -> sp.Expr:
        if self.tok.kind == "end":
            _fail(None, "the expression is empty")
        value = self.expr()
        if self.tok.kind != "end":
            if self.at(")"):
                _fail(self.tok.col, "unbalanced parentheses: this ')' has no matching '('")
            if self.at(","):
                _fail(self.tok.col, "unexpected ',': commas only separate function arguments")
            self.unexpected("an operator (+ - * / **) or the end of the expression")
        return value

    def expr(self):
        left = self.term()
        while self.at("+") or self.at("-"):
            op = self.advance()
            right = self.term()
            left = self.operate(op.col, f"the operation {op.text!r}", _BINARY[op.text], left, right)
        return left

    def term(self):
        left = self.unary()
        while self.at("*") or self.at("/"):
            op = self.advance()
            right = self.unary()
            if op.text == "/" and right == 0:
                _fail(op.col, "division by zero")
            left = self.operate(op.col, f"the operation {op.text!r}", _BINARY[op.text], left, right)
        return left

    def unary(self):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                _fail(self.tok.col, f"the expression is nested too deeply (at most {MAX_DEPTH} levels)")
            if self.at("+") or self.at("-"):
                op = self.advance()
                operand = self.unary()
                return operand if op.text == "+" else self.operate(op.col, "the negation", operator.neg, operand)
            return self.power()
        finally:
            self.depth -= 1

    def power(self):
        base = self.atom()
        if self.tok.kind in ("num", "name") or self.at("("):
            _fail(self.tok.col, f"missing operator before {self.tok.text!r} (implicit multiplication is not supported; write *)")
        if not self.at("**"):
            return base
        op = self.advance()
        exponent = self.unary()
        self.check_power(base, exponent, op.col)
        return self.build(op.col, "the power", operator.pow, base, exponent)

    @staticmethod
    def check_power(base, exponent, col: int):
        if not isinstance(exponent, sp.Number):
            return
        if abs(exponent) > MAX_EXPONENT:
            _fail(col, f"the exponent {exponent} is too large (numeric exponents are at most {MAX_EXPONENT} in magnitude)")
        if base == 0 and exponent < 0:
            _fail(col, "division by zero (0 raised to a negative power)")
        size = abs(float(exponent))
        for number in base.atoms(sp.Rational):
            digits = max(math.log10(abs(int(number.p))) if number.p else 0.0, math.log10(int(number.q)))
            if size * digits > MAX_DIGITS:
                _fail(col, f"the power would create a number with more than {MAX_DIGITS} digits")

    def atom(self):
        tok = self.tok
        if tok.kind == "num":
            self.advance()
            return tok.value
        if tok.kind == "name":
            self.advance()
            return self.name(tok)
        if self.at("("):
            self.advance()
            if self.at(")"):
                _fail(tok.col, "empty parentheses '()'")
            value = self.expr()
            self.close(tok, "the parenthesis")
            return value
        self.unexpected(_OPERAND)

    def name(self, tok: _Token):
        name, call = tok.text, self.at("(")
        if name == "True":
            _fail(tok.col, "'True' is allowed only as a Piecewise condition, e.g. Piecewise((x, w < 0), (0, True))")
        if keyword.iskeyword(name):
            _fail(tok.col, f"the Python keyword {name!r} is not allowed; allowed: {_ALLOWED_TEXT}")
        if name in ALLOWED_FUNCTIONS:
            if not call:
                _fail(tok.col, f"the function {name!r} must be called with parentheses, e.g. {name}(x)")
            return self.call(tok)
        if name in self.names:
            if call:
                _fail(tok.col, f"{name!r} is not a function; {self.allowed_functions()}")
            return self.names[name]
        if call:
            _fail(tok.col, f"unknown function {name!r}; {self.allowed_functions()}")
        if name in self.vocabulary.refused:
            _fail(tok.col, self.vocabulary.refused[name])
        _fail(tok.col, f"unknown name {name!r}; {self.allowed_names()}")

    def call(self, tok: _Token):
        name = tok.text
        constructor, arities = ALLOWED_FUNCTIONS[name]
        if self.call_depth >= MAX_CALL_DEPTH:
            _fail(tok.col, f"function calls are nested too deeply (at most {MAX_CALL_DEPTH} levels)")
        if name == "Piecewise" and self.in_condition:
            _fail(tok.col, "a Piecewise condition may not contain a Piecewise; nest Piecewise in the branch values instead")
        opening = self.advance()
        self.call_depth += 1
        try:
            args = self.arguments(name, opening)
        finally:
            self.call_depth -= 1
        if len(args) not in arities:
            counts = f"{arities.start}" if len(arities) == 1 else f"{arities.start} to {arities.stop - 1}"
            _fail(tok.col, f"{name} takes {counts} argument{'s' if arities.stop > 2 else ''}, got {len(args)}")
        return self.build(tok.col, f"{name}(...)", constructor, *args)

    def arguments(self, name: str, opening: _Token) -> list:
        if name == "Piecewise":
            return self.piecewise_branches(opening)
        args = []
        if not self.at(")"):
            args.append(self.expr())
            while self.at(","):
                self.advance()
                args.append(self.expr())
        self.close(opening, f"{name}(...)")
        return args

    def piecewise_branches(self, opening: _Token):
        branches = []
        while True:
            start = self.tok
            if not self.at("("):
                self.unexpected("a Piecewise branch '(expression, condition)'")
            self.advance()
            value = self.expr()
            if not self.at(","):
                self.unexpected("',' between the expression and the condition of a Piecewise branch")
            self.advance()
            condition = self.condition()
            self.close(start, "the Piecewise branch")
            branches.append((value, condition))
            if self.at(","):
                self.advance()
                continue
            self.close(opening, "Piecewise(...)")
            return branches

    def condition(self):
        tok = self.tok
        if tok.kind == "name" and tok.text == "True":
            self.advance()
            return sp.true
        if tok.kind == "name" and tok.text in ("False", "None"):
            _fail(tok.col, f"{tok.text!r} is not a condition; use True or a single comparison")
        self.in_condition += 1
        try:
            left = self.expr()
            if not (self.tok.kind == "op" and self.tok.text in _COMPARISONS):
                self.unexpected("a comparison (< <= > >=) in the Piecewise condition")
            op = self.advance()
            right = self.expr()
        finally:
            self.in_condition -= 1
        if self.tok.kind == "op" and self.tok.text in _COMPARISONS:
            _fail(self.tok.col, "chained comparisons are not supported; use a single comparison")
        return self.build(op.col, f"the comparison {op.text!r}", _COMPARISONS[op.text], left, right)


def validate_names(names: Sequence[str], check: Callable[[str], object] | None = None) -> tuple[str, ...]:
    """Parameter names as a tuple: distinct ASCII identifiers, each passed to ``check`` (which raises
    :class:`~flowlab.engine.errors.FlowlabInputError` for a name the caller reserves)."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise FlowlabInputError(f"parameter names must be a sequence of strings, got {type(names).__name__}")
    names = tuple(names)
    if not names:
        raise FlowlabInputError("at least one parameter name is required")
    if len(names) > MAX_ARGS:
        raise FlowlabInputError(f"too many parameters ({len(names)}; at most {MAX_ARGS})")
    for name in names:
        if not isinstance(name, str):
            raise FlowlabInputError(f"parameter names must be strings, got {name!r}")
        if not _PARAM_NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
            raise FlowlabInputError(
                f"invalid parameter name {name!r}: use an ASCII letter followed by letters, digits or '_' "
                f"(at most {MAX_NAME_LENGTH} characters), and separate names with commas"
            )
        if check is not None:
            check(name)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FlowlabInputError(f"parameter names must be distinct; repeated: {', '.join(duplicates)}")
    return names


def parse_names(text: str, check: Callable[[str], object] | None = None) -> tuple[str, ...]:
    """Split a comma-separated list of parameter names, e.g. ``"e, w, a"`` -> ``("e", "w", "a")``,
    checked by :func:`validate_names` (``check`` refuses the names the caller reserves)."""
    if not isinstance(text, str):
        raise FlowlabInputError(f"parameter names must be given as a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise FlowlabInputError(f"the parameter list is {len(text)} characters long; at most {MAX_LENGTH} allowed")
    if not text.strip(" \t"):
        raise FlowlabInputError("at least one parameter name is required, e.g. 'e, w'")
    return validate_names(tuple(part.strip(" \t") for part in text.split(",")), check)


def parse_expression(text: str, vocabulary: Vocabulary, *, what: str = "expression") -> sp.Expr:
    """Parse user-typed text into a SymPy expression in the names of ``vocabulary``, through a whitelist only.

    Any other name, any function outside :data:`ALLOWED_FUNCTIONS` and any other syntax raise
    :class:`~flowlab.engine.errors.FlowlabInputError` ``invalid <what> at column <n>: <why>``.
    """
    if not isinstance(text, str):
        raise FlowlabInputError(f"the {what} must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise FlowlabInputError(f"invalid {what}: the text is {len(text)} characters long; at most {MAX_LENGTH} allowed")
    try:
        parser = _Parser(text, vocabulary, what)
        value = parser.parse()
        if not isinstance(value, sp.Expr):  # pragma: no cover - booleans only arise inside Piecewise
            _fail(None, "the expression is not a number-valued expression")
        parser.checked(value, None, f"the {what}")
        stray = value.free_symbols - set(vocabulary.symbols.values())
        if stray:  # pragma: no cover - the parser only creates whitelisted symbols
            _fail(None, f"unexpected symbols {sorted(map(str, stray))}; {parser.allowed_names()}")
    except _Refusal as refusal:
        where = f" at column {refusal.col}" if refusal.col is not None else ""
        raise FlowlabInputError(f"invalid {what}{where}: {refusal.message}") from None
    except RecursionError:  # pragma: no cover - the depth limit should make this unreachable
        raise FlowlabInputError(f"invalid {what}: the expression is nested too deeply (at most {MAX_DEPTH} levels)") from None
    return value
