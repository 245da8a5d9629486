"""One vocabulary of options over every command: each rule is checked on every (sub)command that
``flowlab.cli.app.build_parser()`` builds, walked recursively (new commands are covered as they come).

The rules (flowlab/cli/args.py says the same):
- every option has help text; the help shows every default except None (the help then says what
  happens) and the False of a switch, 0 and 0.0 included; no default is stated twice; no "%%";
- --p/--q: the binary chain, always a pair, never argparse-required; a command without a default
  chain that needs one refuses with one message; train and guide default to the Figure 4 chain;
- --model is always a fixed choice; a user logit is always --logit (with --kernel: one per next
  token, separated by ';'); an interval of one parameter is always --range NAME:LO:HI;
- paths say FILE or DIR (--out, --trajectory, --kernel, --data); a point is --at POINT;
- --seed is an integer 0..2**32-1 with default 0; --json and --quiet are switches.
"""

import argparse
import json

import pytest

from flowlab.cli.app import build_parser, main
from flowlab.cli.args import FIGURE4_CHAIN, HelpFormatter, chain_from_args
from flowlab.engine.errors import FlowlabInputError

#: Options whose value is a path: their metavar says which kind.
PATH_OPTIONS = {"--out", "--trajectory", "--kernel", "--data"}


def walk_commands(parser, path=()):
    """(path, subparser) of every command and nested action below ``parser``, walked recursively."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield path + (name,), sub
                yield from walk_commands(sub, path + (name,))


COMMANDS = [(" ".join(path), sub) for path, sub in walk_commands(build_parser())]
#: The commands that run something (not a family that only holds actions).
LEAVES = [(name, sub) for name, sub in COMMANDS
          if not any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)]


def _options(sub):
    """The options of a command, without -h."""
    return [a for a in sub._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def _visible(sub):
    return [a for a in _options(sub) if a.help is not argparse.SUPPRESS]


def _rendered(sub, action) -> str:
    """The help text of one option as `--help` prints it (defaults expanded)."""
    return sub._get_formatter()._expand_help(action)


def test_the_walk_sees_every_command():
    names = {name for name, _ in LEAVES}
    assert {"chain", "derive", "eval", "flow", "critical", "basins", "plot", "train", "guide", "demo",
            "cooccurrence claims", "ntp-order run", "ntp-order data"} <= names


@pytest.mark.parametrize("name, sub", COMMANDS, ids=[n for n, _ in COMMANDS])
def test_help_renders_without_escapes_and_with_defaults(name, sub):
    assert issubclass(sub.formatter_class, HelpFormatter), name
    text = sub.format_help()
    assert "%%" not in text and "%(" not in text, name
    for action in _options(sub):
        if action.help is argparse.SUPPRESS:
            # a former spelling, kept working: another visible option has the same destination
            assert any(a.dest == action.dest for a in _visible(sub)), (name, action.option_strings)
            continue
        shown = _rendered(sub, action)
        assert shown.strip(), (name, action.option_strings, "has no help")
        assert shown.count("(default") <= 1, (name, action.option_strings, shown)
        switch = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if action.default is not None and not switch and not isinstance(action, argparse._VersionAction):
            assert "(default" in shown, (name, action.option_strings, shown)


def test_a_default_of_zero_is_shown():
    sub = dict(COMMANDS)["critical"]
    seed = next(a for a in _options(sub) if "--seed" in a.option_strings)
    assert seed.default == 0 and "(default: 0)" in _rendered(sub, seed)
    assert "(default: 0)" in sub.format_help()


@pytest.mark.parametrize("name, sub", LEAVES, ids=[n for n, _ in LEAVES])
def test_one_spelling_per_idea(name, sub):
    by_option = {o: a for a in _visible(sub) for o in a.option_strings}
    for option, action in by_option.items():
        if option in PATH_OPTIONS:
            assert action.metavar in ("FILE", "DIR"), (name, option, action.metavar)
        assert action.metavar != "OUT", (name, option)
    if "--at" in by_option:
        assert by_option["--at"].metavar == "POINT", name
    if "--range" in by_option:
        assert by_option["--range"].metavar == "NAME:LO:HI", name
    assert "--box" not in by_option and "--logits" not in by_option, name
    if "--model" in by_option:
        assert by_option["--model"].choices, (name, "--model must be a fixed choice")
    if "--seed" in by_option:
        seed = by_option["--seed"]
        assert seed.default == 0 and seed.type("0") == 0 and seed.type(str(2**32 - 1)) == 2**32 - 1, name
        with pytest.raises(argparse.ArgumentTypeError):
            seed.type(str(2**32))
    for switch in ("--json", "--quiet"):
        if switch in by_option:
            assert isinstance(by_option[switch], argparse._StoreTrueAction), (name, switch)


def test_no_two_options_are_near_homonyms():
    """No option is another one plus a plural 's' (as --logit/--logits were)."""
    options = {o for _, sub in LEAVES for a in _visible(sub) for o in a.option_strings if o.startswith("--")}
    assert not sorted(o for o in options if o + "s" in options)


def _namespace(sub, **given):
    """The arguments of a command as parsed with only ``given`` on the command line."""
    values = {a.dest: a.default for a in sub._actions if a.dest != argparse.SUPPRESS}
    values.update(sub._defaults)
    values.update(given)
    return argparse.Namespace(**values)


#: Commands whose --p/--q name one chain. ``sweep`` takes grids of p and q (LO:HI:N), a different
#: idea with its own parser and its own test (tests/test_sweep.py).
GRID_COMMANDS = {"sweep markov"}
CHAIN_COMMANDS = [(name, sub) for name, sub in LEAVES
                  if any("--p" in a.option_strings for a in _options(sub)) and name not in GRID_COMMANDS]


@pytest.mark.parametrize("name, sub", CHAIN_COMMANDS, ids=[n for n, _ in CHAIN_COMMANDS])
def test_p_and_q_follow_one_rule(name, sub):
    by_option = {o: a for a in _visible(sub) for o in a.option_strings}
    p, q = by_option["--p"], by_option["--q"]
    assert not p.required and not q.required and p.default is None and q.default is None, name
    assert (p.metavar, q.metavar) == ("P", "Q"), name
    assert "chain_required" in sub._defaults and "chain_default" in sub._defaults, f"{name}: use args.add_chain"
    for half in ({"p": 0.3}, {"q": 0.3}):
        with pytest.raises(FlowlabInputError, match="give both --p and --q, or neither"):
            chain_from_args(_namespace(sub, **half))
    both = chain_from_args(_namespace(sub, p=0.3, q=0.6))
    assert (both.p, both.q) == (0.3, 0.6)
    neither = _namespace(sub)
    if sub._defaults["chain_default"] is not None:
        chain = chain_from_args(neither)
        assert (chain.p, chain.q) == FIGURE4_CHAIN == (0.5, 0.8), name
        assert "(default: 0.5" in _rendered(sub, p) and "(default: 0.8" in _rendered(sub, q)
    elif sub._defaults["chain_required"]:
        assert "(required)" in _rendered(sub, p), name
        with pytest.raises(FlowlabInputError, match="give --p and --q"):
            chain_from_args(neither)
    else:
        assert chain_from_args(neither) is None, name


def test_p_and_q_defaults_are_where_the_paper_sets_them():
    """Only the commands that reproduce Figure 4 have a default chain; basins and plot need --p/--q; the
    others have an alternative (a k-state --kernel, the --regions table) or, derive, none is needed."""
    defaults = {name: sub._defaults["chain_default"] for name, sub in CHAIN_COMMANDS}
    assert {n for n, d in defaults.items() if d is not None} == {"train", "guide"}
    required = {name for name, sub in CHAIN_COMMANDS if sub._defaults["chain_required"]}
    assert {"basins", "plot"} <= required
    for name, sub in CHAIN_COMMANDS:
        if name not in required and defaults[name] is None and name != "derive":
            options = {o for a in _visible(sub) for o in a.option_strings}
            assert options & {"--kernel", "--regions"}, f"{name}: without --p/--q, what does it analyse?"


def test_former_spellings_still_parse():
    parser = build_parser()
    args = parser.parse_args(["critical", "--p", "0.2", "--q", "0.3", "--box", "e:-1:1", "--range", "w:-2:2"])
    assert args.range == ["e:-1:1", "w:-2:2"]
    args = parser.parse_args(["eval", "--kernel", "k.json", "--logits", "u; 0", "--params", "u", "--at", "u=1"])
    assert args.logit == "u; 0"


def test_logit_with_several_expressions_needs_a_kernel(capsys):
    assert main(["eval", "--p", "0.2", "--q", "0.3", "--logit", "u*x; 0", "--params", "u", "--at", "u=1"]) == 2
    assert "go with --kernel FILE" in capsys.readouterr().err


def test_missing_chain_is_one_message_in_every_command_that_needs_one(capsys, tmp_path):
    for argv in (["flow", "--at", "e=1,w=1"], ["basins", "--grid", "8"],
                 ["plot", "landscape", "--out", str(tmp_path / "f.png")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"flowlab {argv[0]}: error: give --p and --q"), err
    assert list(tmp_path.iterdir()) == []


def test_chain_json_nests_the_chain(capsys):
    assert main(["chain", "--p", "0.2", "--q", "0.3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "ok" and out["message"] and out["system"] == "markov"
    assert out["chain"]["p"] == 0.2 and out["chain"]["q"] == 0.3
    # the entropy rate of the chain, independently: sum_i pi_i h(row i)
    from math import log
    pi0 = 0.3 / 0.5
    h = lambda x: -x * log(x) - (1 - x) * log(1 - x)
    assert out["chain"]["entropy_rate"] == pytest.approx(pi0 * h(0.2) + (1 - pi0) * h(0.3), rel=1e-12)
    assert "entropy_rate" not in out and "p" not in out
