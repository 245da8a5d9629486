"""The whitelisting logit parser (MODELS.md section 5): exact results, clear refusals, nothing executed."""

import builtins
import io
import os
import subprocess
import time
import tokenize
from pathlib import Path

import pytest
import sympy as sp

import flowlab.symbolic.parse as parse_module
from flowlab.engine.errors import FlowlabInputError
from flowlab.symbolic.parse import (
    ALLOWED_FUNCTIONS,
    MAX_CALL_DEPTH,
    MAX_CONSTANT_HEIGHT,
    MAX_DEPTH,
    MAX_LENGTH,
)
from flowlab.systems.markov.logit import parse_logit, parse_params
from flowlab.systems.markov.models import ATTENTION, TOKEN, Model, get_model, param_symbol

e, w, a = (param_symbol(n) for n in ("e", "w", "a"))
x, m = TOKEN, ATTENTION
EW = ("e", "w")
EW_TEXT = "e**2*(1 + 2*w*Abs(w))*x - e**2/2"


def reject(text, *fragments, params=EW, **kwargs):
    """Parse ``text``, expect a one-line FlowlabInputError containing every fragment; return the message."""
    with pytest.raises(FlowlabInputError) as info:
        parse_logit(text, params, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# -- exact results --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        EW_TEXT,
        "e**2 * (1 + 2 * w * Abs(w)) * x - e**2 / 2",
        "\t e**2*(1+2*w*Abs(w))*x-e**2/2 \t",
        "e**2*(1 + 2*w*Abs(w))*x - e**2*0.5",
        "e**2*(1.0 + 2*w*Abs(w))*x - 5e-1*e**2",
    ],
)
def test_ew_logit_reproduces_the_preset_exactly(text):
    preset = get_model("ew").logit
    parsed = parse_logit(text, EW)
    assert parsed == preset
    assert sp.srepr(parsed) == sp.srepr(preset)
    assert all(s.is_real for s in parsed.free_symbols)
    model = Model(name="typed", params=EW, logit=parsed)
    assert model.full_logit == get_model("ew").full_logit
    assert model.with_free_bias().full_logit == get_model("ewb").full_logit


@pytest.mark.parametrize(
    "text,expected",
    [
        ("-x**2", -(x**2)),
        ("-(x)**2", -(x**2)),
        ("(-x)**2", x**2),
        ("2**-1", sp.Rational(1, 2)),
        ("2**3**2", sp.Integer(512)),
        ("x**w**e", x ** (w**e)),
        ("(x**w)**e", (x**w) ** e),
        ("-x**-w", -(x ** (-w))),
        ("x**-w**2", x ** (-(w**2))),
        ("x**+2", x**2),
        ("x - w - e", (x - w) - e),
        ("x - (w - e)", x - w + e),
        ("x / w / e", (x / w) / e),
        ("x / (w / e)", x * e / w),
        ("x/2*w", x * w / 2),
        ("1 + 2*3", sp.Integer(7)),
        ("(1 + 2)*3", sp.Integer(9)),
        ("2*(x + w)", 2 * x + 2 * w),
        ("2*-x", -2 * x),
        ("--x", x),
        ("+x", x),
        ("x--w", x + w),
        ("-+-x", x),
        ("x*w**2", x * w**2),
        ("e*x + w*x*x", e * x + w * x**2),
        ("1/2", sp.Rational(1, 2)),
        ("2**(1/2)", sp.sqrt(2)),
        ("(((x)))", x),
        ("x*0", sp.Integer(0)),
    ],
)
def test_precedence_and_associativity(text, expected):
    value = parse_logit(text, EW)
    assert value == expected, (text, value, expected)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("0.5", sp.Rational(1, 2)),
        ("1e-3", sp.Rational(1, 1000)),
        ("2.5E+2", sp.Integer(250)),
        ("2.5e2", sp.Integer(250)),
        ("1E3", sp.Integer(1000)),
        (".25", sp.Rational(1, 4)),
        ("3.", sp.Integer(3)),
        ("1.e1", sp.Integer(10)),
        ("007", sp.Integer(7)),
        ("0.1", sp.Rational(1, 10)),
        ("12345678901234567890", sp.Integer(12345678901234567890)),
        ("1.5e-2", sp.Rational(3, 200)),
    ],
)
def test_numbers_are_exact_rationals(text, expected):
    value = parse_logit(text, EW)
    assert isinstance(value, sp.Rational) and value == expected
    assert not value.atoms(sp.Float)


def test_scientific_notation_next_to_a_parameter_named_e():
    assert parse_logit("2e-3*e", EW) == sp.Rational(2, 1000) * e
    assert parse_logit("2*e-3", EW) == 2 * e - 3
    assert parse_logit("e-3e-1", EW) == e - sp.Rational(3, 10)


FUNCTION_CASES = [
    ("Abs", "Abs(w)", sp.Abs(w)),
    ("sign", "sign(w - e)", sp.sign(w - e)),
    ("Max", "Max(x, w)", sp.Max(x, w)),
    ("Max", "Max(x, w, e, 0)", sp.Max(x, w, e, 0)),
    ("Min", "Min(x, -w)", sp.Min(x, -w)),
    ("exp", "exp(-w*x)", sp.exp(-w * x)),
    ("log", "log(e**2)", sp.log(e**2)),
    ("log", "log(x, 2)", sp.log(x, 2)),
    ("sqrt", "sqrt(1 + w**2)", sp.sqrt(1 + w**2)),
    ("tanh", "tanh(e*x)", sp.tanh(e * x)),
    ("Heaviside", "Heaviside(w)", sp.Heaviside(w)),
    ("Heaviside", "Heaviside(w, 1)", sp.Heaviside(w, 1)),
    ("Piecewise", "Piecewise((x, w < 0), (0, True))", sp.Piecewise((x, w < 0), (0, True))),
    (
        "Piecewise",
        "Piecewise((e*x, w <= -1), (w*x, w > 1/2), (-x, e >= w), (0, True))",
        sp.Piecewise((e * x, w <= -1), (w * x, w > sp.Rational(1, 2)), (-x, e >= w), (0, True)),
    ),
    ("Piecewise", "Piecewise((x, Abs(w) < e**2))", sp.Piecewise((x, sp.Abs(w) < e**2))),
]


@pytest.mark.parametrize("name,text,expected", FUNCTION_CASES)
def test_every_whitelisted_function(name, text, expected):
    assert name in text
    value = parse_logit(text, EW)
    assert value == expected, (text, value, expected)
    assert value.free_symbols <= {e, w, x}


def test_the_function_cases_cover_the_whitelist():
    assert {case[0] for case in FUNCTION_CASES} == set(ALLOWED_FUNCTIONS)
    assert ALLOWED_FUNCTIONS["Abs"] == (sp.Abs, range(1, 2))
    for constructor, arities in ALLOWED_FUNCTIONS.values():
        assert callable(constructor) and min(arities) >= 1
    with pytest.raises(TypeError):
        ALLOWED_FUNCTIONS["eval"] = (eval, range(1, 2))  # the whitelist is read-only


def test_functions_compose():
    text = "Piecewise((tanh(e*x)*sqrt(Abs(w)), Max(w, e) < 1), (exp(-w)*log(1 + e**2), True)) + Heaviside(x - 1/2)*sign(w)"
    expected = sp.Piecewise(
        (sp.tanh(e * x) * sp.sqrt(sp.Abs(w)), sp.Max(w, e) < 1), (sp.exp(-w) * sp.log(1 + e**2), True)
    ) + sp.Heaviside(x - sp.Rational(1, 2)) * sp.sign(w)
    assert parse_logit(text, EW) == expected


def test_attention_average_only_when_allowed():
    text = "e**2*(x - 1/2 + a*(m - 1/2))"
    expected = e**2 * (x - sp.Rational(1, 2) + a * (m - sp.Rational(1, 2)))
    assert parse_logit(text, ("e", "a"), allow_attention=True) == expected
    assert m == sp.Symbol("m", real=True) and m.is_real
    reject(text, "column 20", "attention average 'm'", "allow_attention=True", params=("e", "a"))


def test_params_may_be_given_as_a_comma_separated_string():
    assert parse_logit(EW_TEXT, "e, w") == get_model("ew").logit
    assert parse_logit("a1*x + long_name", "a1,long_name") == param_symbol("a1") * x + param_symbol("long_name")


def test_parameters_are_real_flowlab_symbols():
    value = parse_logit("e*w*x", EW)
    assert value.free_symbols == {param_symbol("e"), param_symbol("w"), TOKEN}
    assert value.free_symbols.isdisjoint({sp.Symbol("e"), sp.Symbol("w"), sp.Symbol("x")})


def test_unused_parameters_are_fine_and_whitespace_is_ignored():
    assert parse_logit("  x  ", EW) == x
    assert parse_logit("e\t*\tx", EW) == e * x


# -- parameter lists ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [("e,w,a", ("e", "w", "a")), (" e , w ", ("e", "w")), ("theta_1", ("theta_1",)), ("E,\tpi", ("E", "pi"))],
)
def test_parse_params(text, expected):
    assert parse_params(text) == expected


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("", "at least one parameter"),
        ("  ", "at least one parameter"),
        ("e,,w", "invalid parameter name ''"),
        ("e,w,", "invalid parameter name ''"),
        ("x", "reserved for the token"),
        ("e,m", "reserved for the attention average"),
        ("b", "reserved for the bias"),
        ("exp", "name of a function"),
        ("Abs", "name of a function"),
        ("Piecewise", "name of a function"),
        ("lambda", "Python keyword"),
        ("True", "Python keyword"),
        ("import", "Python keyword"),
        ("e w", "separate names with commas"),
        ("e,e", "repeated: e"),
        ("_e", "invalid parameter name '_e'"),
        ("__class__", "invalid parameter name '__class__'"),
        ("1a", "invalid parameter name '1a'"),
        ("\u00e9", "invalid parameter name"),
        ("a" * 33, "at most 32 characters"),
        ("e;w", "invalid parameter name 'e;w'"),
        ("os.system", "invalid parameter name 'os.system'"),
        ("x" * (MAX_LENGTH + 1), "at most 2000"),
    ],
)
def test_parse_params_rejects(text, fragment):
    with pytest.raises(FlowlabInputError) as info:
        parse_params(text)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("params", [(), ("x",), ("e", "e"), ["e", 3], ("e w",), ("b",), 5, None])
def test_parse_logit_validates_its_params(params):
    with pytest.raises(FlowlabInputError):
        parse_logit("x", params)


@pytest.mark.parametrize("value", [None, 3, b"x", ["x"]])
def test_parse_inputs_must_be_strings(value):
    with pytest.raises(FlowlabInputError, match="must be"):
        parse_logit(value, EW)
    with pytest.raises(FlowlabInputError, match="must be"):
        parse_params(value)


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,fragments",
    [
        ("", ["empty"]),
        ("   \t ", ["empty"]),
        ("y", ["column 1", "unknown name 'y'", "parameters e, w", "token x"]),
        ("e*x + z", ["column 7", "unknown name 'z'"]),
        ("b + x", ["unknown name 'b'", "bias"]),
        ("E", ["unknown name 'E'"]),
        ("pi*x", ["unknown name 'pi'"]),
        ("I", ["unknown name 'I'"]),
        ("oo", ["unknown name 'oo'"]),
        ("eval(x)", ["column 1", "unknown function 'eval'", "allowed functions: Abs, sign, Max"]),
        ("cos(x)", ["unknown function 'cos'"]),
        ("abs(x)", ["unknown function 'abs'"]),
        ("w(x)", ["'w' is not a function"]),
        ("exp", ["function 'exp' must be called"]),
        ("exp + 1", ["function 'exp' must be called"]),
        ("exp(x, w)", ["column 1", "exp takes 1 argument, got 2"]),
        ("Abs()", ["Abs takes 1 argument, got 0"]),
        ("sqrt(x, 2)", ["sqrt takes 1 argument, got 2"]),
        ("log(x, w, e)", ["log takes 1 to 2 arguments, got 3"]),
        ("Heaviside()", ["Heaviside takes 1 to 2 arguments, got 0"]),
        ("Max(x)", ["Max takes 2 to 100 arguments, got 1"]),
        ("exp(x,)", ["column 7", "unexpected ')'"]),
        ("exp(,x)", ["column 5", "unexpected ','"]),
        ("x, w", ["column 2", "commas only separate function arguments"]),
        ("e +* w", ["column 4", "unexpected '*'"]),
        ("x * * 2", ["column 5", "unexpected '*'"]),
        ("x +", ["column 4", "unexpected end of input"]),
        ("x**", ["column 4", "unexpected end of input"]),
        ("*x", ["column 1", "unexpected '*'"]),
        ("(x", ["column 1", "unbalanced parentheses", "never closed"]),
        ("x)", ["column 2", "unbalanced parentheses", "no matching '('"]),
        ("(x))", ["column 4", "no matching '('"]),
        ("exp(x", ["column 4", "never closed"]),
        ("exp(x w)", ["column 7", "missing operator"]),
        ("()", ["column 1", "empty parentheses"]),
        ("2x", ["column 1", "invalid number '2x'", "2*e"]),
        ("2 x", ["column 3", "missing operator", "implicit multiplication"]),
        ("(x)(w)", ["column 4", "missing operator"]),
        ("2(x)", ["column 2", "missing operator"]),
        ("1.2.3", ["column 1", "invalid number '1.2.3'"]),
        ("1e", ["invalid number '1e'"]),
        ("1e+", ["invalid number '1e'"]),
        ("0x1F", ["invalid number '0x1F'"]),
        ("1_000", ["invalid number '1_000'"]),
        ("x^2", ["column 2", "'^' is XOR", "**"]),
        ("x // 2", ["column 3", "floor division"]),
        ("x % 2", ["'%' is not allowed"]),
        ("x == 1", ["column 3", "'='"]),
        ("x != 1", ["'!'"]),
        ("x < 1", ["column 3", "comparison '<'", "Piecewise condition"]),
        ("x >= w", ["comparison '>='"]),
        ("~x", ["'~' is not allowed"]),
        ("x # comment", ["comments"]),
        ("x\\", ["backslashes"]),
        ("{x}", ["braces"]),
        ("`x`", ["backquotes"]),
        ("$x", ["'$'"]),
        ("x\u2212w", ["column 2", "non-ASCII", "type '-' for minus"]),
        ("x\u00b7w", ["non-ASCII"]),
        ("\u0435*x", ["non-ASCII"]),  # Cyrillic e
        ("x\x00", ["control character"]),
        ("x +\nw", ["column 4", "line breaks"]),
        ("x\r", ["line breaks"]),
        ("x\x0bw", ["control character"]),
        ("True", ["'True' is allowed only as a Piecewise condition"]),
        ("None", ["Python keyword 'None'"]),
        ("False", ["Python keyword 'False'"]),
        ("not x", ["Python keyword 'not'"]),
        ("x and w", ["column 3", "Python keyword 'and'"]),
        ("x or w", ["Python keyword 'or'"]),
        ("x is w", ["Python keyword 'is'"]),
        ("x in w", ["Python keyword 'in'"]),
        ("x if w else e", ["column 3", "Python keyword 'if'"]),
        ("yield x", ["Python keyword 'yield'"]),
        ("await x", ["Python keyword 'await'"]),
        ("def f", ["Python keyword 'def'"]),
        ("x.real", ["column 2", "attribute access"]),
        ("(x).real", ["column 4", "attribute access"]),
        (". 5", ["column 1", "'.'"]),
    ],
)
def test_refusals_name_problem_and_column(text, fragments):
    reject(text, *fragments)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("Piecewise()", "expected a Piecewise branch"),
        ("Piecewise(x, True)", "expected a Piecewise branch"),
        ("Piecewise((x, w))", "expected a comparison"),
        ("Piecewise((x))", "',' between the expression and the condition"),
        ("Piecewise((x, True, w))", "')' to close the Piecewise branch"),
        ("Piecewise((x, w < 0 < e), (0, True))", "chained comparisons"),
        ("Piecewise((x, (w < 0)), (0, True))", "without parentheses"),
        ("Piecewise((x, w < 0 & e > 0), (0, True))", "'&' is not supported"),
        ("Piecewise((x, w < 0 | e > 0), (0, True))", "'|' is not supported"),
        ("Piecewise((x, w == 0), (0, True))", "'='"),
        ("Piecewise((x, False))", "'False' is not a condition"),
        ("Piecewise((x, None))", "'None' is not a condition"),
        ("Piecewise((x, w < True))", "'True' is allowed only as a Piecewise condition"),
        ("Piecewise((x, Piecewise((w, True)) < 0), (0, True))", "may not contain a Piecewise"),
        ("Piecewise((x, w < 0), (0, True)", "never closed"),
        ("Piecewise", "must be called"),
    ],
)
def test_piecewise_refusals(text, fragment):
    reject(text, fragment)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("1/0", "division by zero"),
        ("x/(w - w)", "division by zero"),
        ("0**-1", "division by zero"),
        ("(x - x)**(-1/2)", "division by zero"),
        ("log(0)", "infinite or undefined"),
        ("log(x, 1)", "infinite or undefined"),
        ("sqrt(-2)", "not real"),
        ("log(-1)*x", "not real"),
        ("(-8)**(1/3)", "not real"),
        ("x + (-1)**(1/2)", "not real"),
        ("Piecewise((x, sqrt(-1) < 0), (0, True))", "not real"),
    ],
)
def test_infinite_undefined_or_complex_constants_are_refused(text, fragment):
    reject(text, fragment)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("9**9**9**9", "exponent 387420489 is too large"),
        ("9**9**9", "exponent 387420489 is too large"),
        ("2**10**6", "exponent 1000000 is too large"),
        ("x**1001", "exponent 1001 is too large"),
        ("x**(-2000)", "exponent -2000 is too large"),
        ("2**-(10**4)", "is too large"),
        ("(2*x)**5000", "exponent 5000 is too large"),
        ("2**1000", "more than 100 digits"),
        ("(10**99*x)**1000", "more than 100 digits"),
        ("((2*x)**300)**300", "more than 100 digits"),
        ("(x + 1/3)**1000", "more than 100 digits"),
        ("10**99*10**99", "more than 100 digits"),
        ("1e5000", "at most 1000"),
        ("1e-5000", "at most 1000"),
        ("1e200", "at most 100 digits"),
        ("1" * 101, "at most 100 digits"),
        ("0." + "0" * 120 + "1", "at most 100 digits"),
        ("sqrt(" + "7" * 150 + ")", "at most 100 digits"),
    ],
)
def test_astronomically_large_numbers_are_refused_quickly(text, fragment):
    start = time.perf_counter()
    reject(text, fragment)
    assert time.perf_counter() - start < 5


def test_sympy_internal_failures_become_input_errors():
    # found by fuzzing: SymPy 1.14 trips an internal assertion while building this log(...)
    text = "99++log(+(1)**(x)+-0.5**Piecewise((1/2, 1/2 < 1/2), (-1, 3e-1 >= x)), tanh(tanh(2)))"
    try:
        value = parse_logit(text, EW)
    except FlowlabInputError as exc:
        assert "column 5" in str(exc)
    else:
        assert isinstance(value, sp.Expr)


def test_moderate_numeric_powers_are_fine():
    assert parse_logit("2**300", EW) == sp.Integer(2) ** 300
    assert parse_logit("x**1000 + 2**-10", EW) == x**1000 + sp.Rational(1, 1024)
    assert parse_logit("(2*x)**10", EW) == 1024 * x**10


def test_overlong_input_is_refused():
    text = "+".join(["x"] * 1001)
    assert len(text) > MAX_LENGTH
    reject(text, "2001 characters", "at most 2000")
    assert parse_logit(text[:1999], EW) == 1000 * x


def test_nesting_depth_limits_without_recursion_error():
    assert parse_logit("(" * (MAX_DEPTH - 1) + "x" + ")" * (MAX_DEPTH - 1), EW) == x
    reject("(" * MAX_DEPTH + "x" + ")" * MAX_DEPTH, "nested too deeply", "at most 100 levels")
    reject("(" * 999 + "x" + ")" * 999, "nested too deeply")
    reject("-" * 1500 + "x", "nested too deeply")
    reject("x" + "**x" * 150, "nested too deeply")
    reject("(" * 1999, "nested too deeply")
    assert parse_logit("-" * (MAX_DEPTH - 1) + "x", EW) == -x


def test_function_nesting_limit():
    nested = "tanh(" * MAX_CALL_DEPTH + "x" + ")" * MAX_CALL_DEPTH
    expected = x
    for _ in range(MAX_CALL_DEPTH):
        expected = sp.tanh(expected)
    assert parse_logit(nested, EW) == expected
    reject("tanh(" + nested + ")", "function calls are nested too deeply")


def test_deeply_nested_constants_are_refused():
    # SymPy evaluates nested constants numerically; the cost explodes with depth.
    reject("(2+" * 30 + "1/7" + ")**(1/3)" * 30, "constant (symbol-free) subexpression", "simplify")
    reject("exp(1/3-tanh(" * 5 + "1/7" + "))" * 5, "constant (symbol-free) subexpression")
    shallow = "(2 + (2 + 1/7)**(1/3))**(1/3)"
    assert parse_logit(shallow, EW) == (2 + (2 + sp.Rational(1, 7)) ** sp.Rational(1, 3)) ** sp.Rational(1, 3)
    # the same nesting around a symbol is fine
    deep = "(2+" * 30 + "w" + ")**(1/3)" * 30
    assert parse_logit(deep, EW).free_symbols == {w}
    assert MAX_CONSTANT_HEIGHT >= 4


def test_pathological_but_legal_inputs_stay_fast():
    cases = [
        "+".join(f"exp(1/{k}-tanh(" * 5 + "w" + "))" * 5 for k in range(2, 30))[:1990].rsplit("+", 1)[0],
        "+".join(f"sqrt({2**332 - k})" for k in range(1, 200))[:1990].rsplit("+", 1)[0],
        "+".join(f"Piecewise((x-{k}, w<1/{k}), (w, True))" for k in range(1, 100))[:1990].rsplit("+", 1)[0],
    ]
    for text in cases:
        start = time.perf_counter()
        parse_logit(text, EW)
        assert time.perf_counter() - start < 20, text[:60]


# -- hostile inputs: refused, and nothing is executed ---------------------------------------------

MARKER_NAME = "flowlab_pwned"
HOSTILE = [
    "__import__('os').system('touch MARKER')",
    '__import__("os").system("touch MARKER")',
    "().__class__.__bases__[0].__subclasses__()",
    "x.__class__.__bases__",
    "x.__class__",
    "(x).__class__",
    "lambda: 0",
    "lambda x: x",
    "exec('1')",
    "eval('1')",
    "compile('1', 'f', 'eval')",
    "open('/etc/passwd')",
    "open('MARKER', 'w')",
    "getattr(x, 'evalf')()",
    "globals()",
    "locals()",
    "vars()",
    "dir()",
    "breakpoint()",
    "input()",
    "print(x)",
    "sympify('x')",
    "parse_expr('x')",
    "S('x')",
    "Symbol('y')",
    "Function('f')(x)",
    "os.system('touch MARKER')",
    "system('touch MARKER')",
    "subprocess",
    "x; import os",
    "import os",
    "from os import system",
    "x if True else y",
    "[x for x in ()]",
    "{}",
    "x[0]",
    '"x"',
    "'x'",
    "f'{x}'",
    "b'x'",
    "e**2 @ w",
    "e**2*(1+2*w*Abs(w)*x - e**2/2",
    "e +* w",
    "x\n__import__('os').system('touch MARKER')",
    "x\r\nimport os",
    "x  # __import__('os')",
    "x\\\n+w",
    "exp(x).__class__",
    "Abs(x).func",
    "Max.__call__(x, w)",
    "sqrt.__globals__",
    "exp.__globals__['__builtins__']",
    "(lambda: __import__('os'))()",
    "__builtins__",
    "__import__",
    "__class__",
    "x.__init__.__globals__",
    "x := 1",
    "w = 1",
    "del x",
    "assert x",
    "raise x",
    "x, w",
    "*x",
    "**x",
    "x(",
    "Piecewise((x, __import__('os')), (0, True))",
    "Piecewise((x, w < 0), (open('MARKER', 'w'), True))",
    "Heaviside(x, eval('1'))",
    "e**2 \u2212 w",
    "exec\u0028'1')",
]


@pytest.fixture
def tripwires(monkeypatch, tmp_path):
    """Replace every way of running code with a recorder; return the recorded calls."""
    calls = []

    def recorder(name):
        def record(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called")

        return record

    for name in ("eval", "exec", "compile", "open", "breakpoint", "input"):
        monkeypatch.setattr(builtins, name, recorder(name))
    monkeypatch.setattr(os, "system", recorder("os.system"))
    monkeypatch.setattr(os, "popen", recorder("os.popen"))
    monkeypatch.setattr(subprocess, "Popen", recorder("subprocess.Popen"))
    monkeypatch.setattr(sp, "sympify", recorder("sympy.sympify"))
    monkeypatch.setattr(sp, "parse_expr", recorder("sympy.parse_expr"))
    monkeypatch.setattr(sp, "S", recorder("sympy.S"))
    real_import = builtins.__import__

    def spy_import(name, *args, **kwargs):
        if name.split(".")[0] in ("os", "subprocess", "shutil", "ctypes", "importlib", "pty", "socket"):
            calls.append(f"import {name}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", spy_import)
    return calls, tmp_path / MARKER_NAME


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_inputs_are_refused_and_nothing_runs(text, tripwires):
    calls, marker = tripwires
    text = text.replace("MARKER", str(marker))
    for allow_attention in (False, True):
        with pytest.raises(FlowlabInputError) as info:
            parse_logit(text, EW, allow_attention=allow_attention)
        assert "\n" not in str(info.value)
    assert calls == []
    assert not marker.exists()
    assert not Path("/tmp", MARKER_NAME).exists()


def test_legitimate_parse_also_runs_nothing(tripwires):
    calls, _ = tripwires
    assert parse_logit(EW_TEXT, EW) == get_model("ew").logit
    assert parse_logit("Piecewise((sqrt(Abs(w))*x, w < 0), (exp(-e)*x, True))", EW) is not None
    assert calls == []


FORBIDDEN_NAMES = {
    "eval", "exec", "compile", "sympify", "parse_expr", "literal_eval", "ast", "__import__", "importlib",
    "getattr", "setattr", "globals", "locals", "vars", "lambdify", "S", "Function", "subprocess", "os",
}  # fmt: skip


def test_parser_source_uses_no_evaluation_primitives():
    source = Path(parse_module.__file__).read_text(encoding="utf-8")
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type in (tokenize.NAME, tokenize.OP)]
    found = []
    for i, tok in enumerate(tokens):
        if tok.type != tokenize.NAME or tok.string not in FORBIDDEN_NAMES:
            continue
        qualified = i >= 2 and tokens[i - 1].string == "." and tokens[i - 2].string == "re" and tok.string == "compile"
        if not qualified:  # re.compile builds a regular expression, which is fine
            found.append((tok.start[0], tok.string))
    assert found == []


def test_the_generic_parser_serves_a_vocabulary_without_any_system():
    """flowlab.symbolic.parse knows no system: the caller gives the names, their wording, special refusals
    and what the text is called (a toy energy in coordinates u, v, where x means nothing)."""
    from flowlab.symbolic.parse import Vocabulary, parse_expression, parse_names

    u, v = sp.symbols("u v", real=True)
    vocabulary = Vocabulary({"u": u, "v": v}, "the coordinates u, v", {"t": "time 't' is not a coordinate"})
    assert parse_expression("u**4/4 - u**2/2 + 0.5*v**2", vocabulary) == u**4 / 4 - u**2 / 2 + v**2 / 2
    with pytest.raises(FlowlabInputError, match=r"^invalid expression at column 5: unknown name 'x'; "
                                                r"allowed names: the coordinates u, v$"):
        parse_expression("u + x", vocabulary)
    with pytest.raises(FlowlabInputError, match=r"^invalid energy at column 3: time 't' is not a coordinate$"):
        parse_expression("2*t", vocabulary, what="energy")
    with pytest.raises(FlowlabInputError, match="an expression is a single line"):
        parse_expression("u\nv", vocabulary)
    # names: the caller's check decides what is reserved (here nothing, so 'x' and 'p' are fine)
    assert parse_names("x, p") == ("x", "p")
    def no_w(name):
        if name == "w":
            raise FlowlabInputError("w is taken")

    with pytest.raises(FlowlabInputError, match="^w is taken$"):
        parse_names("u, w", no_w)
    # the Markov wrapper keeps its own refusals (x0 is a lambdify temporary)
    with pytest.raises(FlowlabInputError, match="reserved"):
        parse_params("x0")
