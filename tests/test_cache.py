"""The on-disk cache of compiled models (flowlab/symbolic/cache.py): hit, miss, damaged or foreign entries
rebuilt, a version change is a miss, an unsafe folder or entry is refused, stored code is whitelisted,
``--no-cache`` and ``cache clear``, and cached numbers bit-identical to freshly compiled ones."""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from flowlab.symbolic import cache
from flowlab.systems.markov import numeric
from flowlab.systems.markov.numeric import ModelSpec, compile_model, compile_spec

EVAL = ["eval", "--model", "ew", "--p", "0.5", "--q", "0.8", "--at", "e=0.3,w=-1", "--json"]


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh cache folder, the per-process caches emptied, and the list of models derived (``_compile`` calls)."""
    root = tmp_path / "cache"
    monkeypatch.setenv(cache.ENV_DIR, str(root))
    monkeypatch.delenv(cache.ENV_OFF, raising=False)
    cache.set_enabled(True)
    monkeypatch.setitem(cache._state, "warned", False)
    compile_model.cache_clear()
    compile_spec.cache_clear()
    derived = []
    real = numeric._compile
    monkeypatch.setattr(numeric, "_compile", lambda model: derived.append(model.name) or real(model))
    yield root, derived
    cache.set_enabled(True)
    compile_model.cache_clear()
    compile_spec.cache_clear()


def _forget():
    """A new process, as far as compiled models go: only the disk cache remembers."""
    compile_model.cache_clear()
    compile_spec.cache_clear()


def _entries(root):
    """The compiled-model entries (a cold process may also store the ``compiled-names`` probe)."""
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if cache.ENTRY_NAME.match(p.name) and p.name.startswith(numeric.CACHE_KIND))


def test_second_process_does_not_derive(store):
    root, derived = store
    first = compile_spec(ModelSpec(preset="ew"))
    assert derived == ["ew"]
    assert len(_entries(root)) == 2  # under the spec and under the model's srepr identity
    _forget()
    second = compile_spec(ModelSpec(preset="ew"))
    from flowlab.systems.markov.models import get_model

    third = compile_model(get_model("ew"))
    assert derived == ["ew"]  # both served from disk
    assert second is not first and second.params == ("e", "w") and third.invariant_names == ("E",)


def test_a_different_model_is_a_miss(store):
    root, derived = store
    compile_spec(ModelSpec(preset="ew"))
    compile_spec(ModelSpec(logit="e**2*(1 + 2*w*Abs(w))*x - e**2/2", params="e,w"))
    assert derived == ["ew", "user"]


def test_a_warm_spec_needs_no_sympy(store):
    """The point of the cache: after one cold run, a new process evaluates without importing SymPy or SciPy."""
    root, _ = store
    code = ("import sys, json; from flowlab.cli import main; main(%r); "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'sympy', 'scipy'})))")
    env = {**os.environ, cache.ENV_DIR: str(root)}
    cold = subprocess.run([sys.executable, "-c", code % EVAL], capture_output=True, text=True, env=env, check=True)
    warm = subprocess.run([sys.executable, "-c", code % EVAL], capture_output=True, text=True, env=env, check=True)
    assert "sympy" in json.loads(cold.stdout.splitlines()[-1])
    assert json.loads(warm.stdout.splitlines()[-1]) == []
    assert cold.stdout.rsplit("}", 1)[0] == warm.stdout.rsplit("}", 1)[0]  # the same payload


@pytest.mark.parametrize("damage", ["truncate", "payload", "foreign", "garbage"])
def test_a_damaged_entry_is_rebuilt_silently(store, damage, capsys):
    root, derived = store
    compile_spec(ModelSpec(preset="ew"))
    for path in _entries(root):  # the spec's entry and the model's
        entry = json.loads(path.read_text())
        if damage == "truncate":
            path.write_bytes(path.read_bytes()[:100])
        elif damage == "payload":  # valid JSON, the digest no longer matches
            entry["payload"]["params"] = ["w", "e"]
            path.write_text(json.dumps(entry))
        elif damage == "foreign":  # a whole, valid entry of another key under this name
            entry["key"] = cache.entry_key(numeric.CACHE_KIND, "another model", numeric.CACHE_SOURCES)
            path.write_text(json.dumps(entry))
        else:
            path.write_bytes(b"\x00\xff" * 50)
    _forget()
    rebuilt = compile_spec(ModelSpec(preset="ew"))
    assert derived == ["ew", "ew"] and rebuilt.params == ("e", "w")
    assert capsys.readouterr().err == ""
    _forget()
    compile_spec(ModelSpec(preset="ew"))  # the rebuilt entry was stored again
    assert derived == ["ew", "ew"]


def test_tampered_code_with_a_valid_digest_is_never_run(store, tmp_path):
    """An entry whose digest was recomputed by whoever edited it: the whitelist still refuses the code."""
    root, derived = store
    compile_spec(ModelSpec(preset="ew"))
    marker = tmp_path / "pwned"
    bad = (f"def _lambdifygenerated(a, b, c, d):\n    open({str(marker)!r}, 'w')\n    return [a]\n")
    for path in _entries(root):
        entry = json.loads(path.read_text())
        entry["payload"]["functions"]["loss"] = {"source": bad}
        entry["sha256"] = cache._digest(entry["payload"])
        path.write_text(json.dumps(entry))
    _forget()
    compile_spec(ModelSpec(preset="ew"))
    assert not marker.exists() and derived == ["ew", "ew"]


@pytest.mark.parametrize("source", [
    "import os\n",
    "def f(a):\n    return ().__class__\n",
    "def f(a):\n    return __import__('os')\n",
    "def f(a):\n    return open('x')\n",
    "def f(a):\n    return load('x')\n",  # numpy.load: a NumPy name, but not a ufunc
    "def f(a):\n    return 'text'\n",
    "def f(a):\n    return [x for x in a]\n",
    "def f(a, *b):\n    return a\n",
    "def f(a):\n    return exp(a)\ndef g(a):\n    return a\n",
    "@exp\ndef f(a):\n    return a\n",
    "def f(a):\n    return (exp)(a)[0]\n",
])
def test_the_whitelist_refuses(source):
    with pytest.raises(ValueError):
        cache.load_function({"source": source})


def test_the_whitelist_accepts_generated_code_and_gives_only_its_names():
    name, namespace = cache.check_source(
        "def _lambdifygenerated(x, p):\n    y = reduce(maximum, [0, x])\n"
        "    return [abs(y)**(-1.0) + sigmoid(x), select([less(x, 0), True], [0, 1/2], default=nan)]\n")
    assert name == "_lambdifygenerated"
    assert set(namespace) == {"__builtins__", "reduce", "maximum", "abs", "sigmoid", "select", "less", "nan"}
    assert namespace["__builtins__"] == {}


@pytest.mark.parametrize("patch", ["flowlab", "sympy"])
def test_a_version_change_is_a_miss(store, monkeypatch, patch):
    root, derived = store
    compile_spec(ModelSpec(preset="ew"))
    _forget()
    if patch == "flowlab":
        import flowlab

        monkeypatch.setattr(flowlab, "__version__", flowlab.__version__ + ".post1")
    else:
        monkeypatch.setattr(cache, "sympy_version", lambda: "0.0.0")
    compile_spec(ModelSpec(preset="ew"))
    assert derived == ["ew", "ew"] and len(_entries(root)) == 4


def test_an_edited_source_is_a_miss(store, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "m.py").write_text("x = 1\n")
    (b / "m.py").write_text("x = 2\n")
    assert cache.entry_key("k", "same", (str(a),)) != cache.entry_key("k", "same", (str(b),))


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
@pytest.mark.parametrize("what", ["folder", "entry"])
def test_a_writable_folder_or_entry_is_refused(store, capsys, what):
    root, derived = store
    compile_spec(ModelSpec(preset="ew"))
    if what == "folder":
        os.chmod(root, 0o777)
    for path in _entries(root) if what == "entry" else ():
        os.chmod(path, 0o666)
    _forget()
    compile_spec(ModelSpec(preset="ew"))
    assert derived == ["ew", "ew"]
    err = capsys.readouterr().err
    assert (err.count("ignoring the cache folder") == 1) == (what == "folder")
    if what == "folder":
        assert cache.info()["trusted"] is False and cache.info()["status"] == "untrusted"


def test_a_folder_created_by_the_cache_is_private(store):
    root, _ = store
    compile_spec(ModelSpec(preset="ew"))
    assert root.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in _entries(root))


def test_concurrent_writers_leave_a_whole_entry(store):
    root, _ = store
    payload = {"data": list(range(2000))}
    threads = [threading.Thread(target=cache.put, args=("test", "same", payload)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get("test", "same") == payload
    assert [p.name for p in root.iterdir()] == [f"test-{cache.entry_key('test', 'same')}.json"]


def _run(argv):
    import contextlib
    import io

    from flowlab.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_no_cache_neither_reads_nor_writes(store):
    root, derived = store
    code, out, _ = _run(["--no-cache", *EVAL])
    assert code == 0 and derived == ["ew"] and _entries(root) == []
    _forget()
    assert _run(EVAL)[1] == out and derived == ["ew", "ew"] and len(_entries(root)) == 2
    _forget()
    _run(["--no-cache", *EVAL])
    assert derived == ["ew", "ew", "ew"]  # the entry is there, but not read
    _forget()
    assert _run(EVAL)[1] == out and derived == ["ew", "ew", "ew"]  # and the cache is back on


def test_cache_clear_removes_entries_only(store):
    root, _ = store
    _run(EVAL)
    (root / "notes.txt").write_text("mine")
    code, out, _ = _run(["cache", "info", "--json"])
    info = json.loads(out)
    assert code == 0 and info["kinds"][numeric.CACHE_KIND] == 2 and info["trusted"]
    assert info["entries"] == sum(info["kinds"].values()) == len(list(root.iterdir())) - 1
    code, out, _ = _run(["cache", "clear", "--json"])
    assert code == 0 and json.loads(out)["removed"] == info["entries"] and json.loads(out)["entries"] == 0
    assert [p.name for p in root.iterdir()] == ["notes.txt"]


def _functions(compiled):
    return {f: getattr(compiled, f) for f in numeric.FUNCTIONS if getattr(compiled, f) is not None}


@pytest.mark.parametrize("spec", [ModelSpec(preset="ew"), ModelSpec(preset="ewb"), ModelSpec(preset="ewa"),
                                  pytest.param(ModelSpec(preset="ewab"), marks=pytest.mark.slow),  # 25-80 s: derive
                                  ModelSpec(logit="u**3*x - tanh(v)*Max(x - m, 0) + exp(-v**2)*u", params="u,v")],
                         ids=["ew", "ewb", "ewa", "ewab", "user"])
def test_cached_numbers_are_bit_identical(store, spec):
    """The functions loaded from disk and the ones ``lambdify`` made give the same float64 bits, on random
    points, extreme points and two chains (several p, q broadcast)."""
    root, derived = store
    cache.set_enabled(False)
    fresh = numeric._compile(spec.build())
    cache.set_enabled(True)
    numeric._store("bits", fresh)
    loaded = numeric._load("bits")
    assert loaded is not None and loaded.params == fresh.params and loaded.invariant_names == fresh.invariant_names
    n = len(fresh.params)
    rng = np.random.default_rng(0)
    theta = np.concatenate([rng.normal(0, 2, (500, n)), rng.uniform(-40, 40, (50, n)), np.zeros((1, n))])
    cols = list(theta.T)
    p = np.where(np.arange(len(theta)) % 2, 0.5, 0.1)
    q = np.where(np.arange(len(theta)) % 2, 0.8, 0.15)
    sigma1 = rng.uniform(0, 1, len(theta))  # the argument S of the fused gradient
    extra = {"ell": [cols[0] * 3, p, q], "fused_gradient": cols + [p, q, sigma1]}
    with np.errstate(all="ignore"):
        for name, fn in _functions(fresh).items():
            args = extra.get(name, cols + [p, q])
            a = [np.broadcast_to(np.asarray(v, float), theta.shape[:1]) for v in fn(*args)]
            b = [np.broadcast_to(np.asarray(v, float), theta.shape[:1]) for v in _functions(loaded)[name](*args)]
            assert len(a) == len(b) and all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b)), name


def test_sigmoid_twin_matches_scipy():
    """The NumPy sigmoid of compiled code (no SciPy import) against scipy.special.expit: within 1 ulp
    (bit-identical where NumPy's exp is the C library's), 0 and 1 in the tails, no warnings."""
    import warnings

    from scipy.special import expit

    from flowlab.symbolic.twins import NUMPY_IMPLEMENTATIONS

    z = np.concatenate([np.random.default_rng(1).normal(0, 10, 10**5), [-1000.0, -745.0, 0.0, 37.0, 1000.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = NUMPY_IMPLEMENTATIONS["sigmoid"](z)
    assert np.all(np.abs(s - expit(z)) <= np.spacing(expit(z)))
    assert s[-5] == 0.0 and s[-3] == 0.5 and s[-1] == 1.0


def test_the_compiled_names_probe_is_kept(store, monkeypatch):
    """The ~1 s probe of the names compiled code uses (behind every Model's name check) runs once per cache."""
    from flowlab.symbolic import compile as site

    site.compiled_names.cache_clear()
    probed = site.compiled_names()
    site.compiled_names.cache_clear()
    monkeypatch.setattr(site, "_probe_names", lambda: pytest.fail("probed again"))
    try:
        assert site.compiled_names() == probed and {"select", "sigmoid", "maximum"} <= probed
    finally:
        site.compiled_names.cache_clear()


def test_a_loaded_function_can_be_stored_again_under_another_key(tmp_path, monkeypatch):
    """The spec of a model first compiled through the API reuses its entry: loaded code is storable again, and
    each loaded function keeps its own source (two functions of one name do not share one)."""
    from flowlab.symbolic import cache as disk_cache

    monkeypatch.setenv("FLOWLAB_CACHE_DIR", str(tmp_path / "c"))
    first = {"source": "def _lambdifygenerated(x):\n    return [x + 1.0]\n"}
    second = {"source": "def _lambdifygenerated(x):\n    return [x * 2.0]\n"}
    f, g = disk_cache.load_function(first), disk_cache.load_function(second)
    assert f(3.0) == [4.0] and g(3.0) == [6.0]
    assert disk_cache.function_record(f) == first and disk_cache.function_record(g) == second


FLOW = ["flow", "--model", "ew", "--p", "0.5", "--q", "0.8", "--at", "e=0.1,w=0.1", "--json", "--quiet"]
BASINS = ["basins", "--model", "ew", "--p", "0.5", "--q", "0.8", "--grid", "12", "--json", "--quiet"]
#: Keys of wall times and rates: the only ones a cold and a warm run may differ in.
_TIMES = ("seconds", "seconds_by_phase", "points_per_s")


def _untimed(payload):
    if isinstance(payload, dict):
        return {k: _untimed(v) for k, v in payload.items() if k not in _TIMES}
    return [_untimed(v) for v in payload] if isinstance(payload, list) else payload


@pytest.mark.parametrize("argv", [FLOW, BASINS], ids=["flow", "basins"])
def test_warm_flow_and_basins_need_no_sympy(store, argv):
    """After one cold run (SymPy derives the model, its critical structure and levels), a new process runs the
    same command without importing SymPy, and prints the same payload: every number the same float64."""
    root, _ = store
    code = ("import sys, json; from flowlab.cli import main; main(%r); "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'sympy'})))")
    env = {**os.environ, cache.ENV_DIR: str(root)}
    runs = [subprocess.run([sys.executable, "-c", code % argv], capture_output=True, text=True, env=env, check=True)
            for _ in range(2)]
    (cold, cold_modules), (warm, warm_modules) = [
        (json.loads(r.stdout.rsplit("\n", 2)[0]), json.loads(r.stdout.splitlines()[-1])) for r in runs]
    assert cold_modules == ["sympy"] and warm_modules == []
    assert _untimed(cold) == _untimed(warm)
    assert cold["reached" if argv is FLOW else "counts"]  # a real payload, not an empty one


def test_the_fused_gradient_comes_from_the_cache(store):
    """A system made from a spec in a warm process takes its fused profiled gradient from the disk (no SymPy
    needed), computes the same bits as the freshly compiled one, and a tampered fused function is rebuilt."""
    from flowlab.systems.markov.chain import MarkovChain
    from flowlab.systems.markov.system import MarkovSystem

    root, derived = store
    chain = MarkovChain(0.5, 0.8)
    rows = np.random.default_rng(3).normal(0, 2, (300, 2))
    cold = MarkovSystem(ModelSpec(preset="ew"), chain, symbolic_levels=False)
    fresh = cold.gradient(rows)
    _forget()
    warm = MarkovSystem(ModelSpec(preset="ew"), chain, symbolic_levels=False)
    fused = warm.numeric.compiled.fused_gradient
    assert derived == ["ew"] and fused is not None and fused.__code__.co_filename.startswith("<flowlab-cache")
    assert np.array_equal(warm.gradient(rows), fresh)
    for path in _entries(root):
        entry = json.loads(path.read_text())
        entry["payload"]["functions"]["fused_gradient"] = {"source": "def f(a):\n    return open('x')\n"}
        entry["sha256"] = cache._digest(entry["payload"])
        path.write_text(json.dumps(entry))
    _forget()
    rebuilt = MarkovSystem(ModelSpec(preset="ew"), chain, symbolic_levels=False)
    assert derived == ["ew", "ew"] and np.array_equal(rebuilt.gradient(rows), fresh)


def test_derived_facts_are_kept_and_a_bad_layout_is_derived_again(store):
    """numeric.spec_facts: derived once per (spec, args), the same JSON data cold and warm; a stored layout the
    caller refuses is derived again; data JSON cannot hold (inf) is returned and never stored."""
    root, _ = store
    spec, calls = ModelSpec(preset="ew"), []

    def derive():
        calls.append(1)
        return {"x": (1.0, 0.1 + 0.2), "y": None}

    valid = lambda facts: isinstance(facts["x"], list)
    first = numeric.spec_facts("test-facts", spec, {"p": 0.5}, derive, valid)
    assert first == {"x": [1.0, 0.30000000000000004], "y": None} and calls == [1]
    assert numeric.spec_facts("test-facts", spec, {"p": 0.5}, derive, valid) == first and calls == [1]
    numeric.spec_facts("test-facts", spec, {"p": 0.25}, derive, valid)
    assert calls == [1, 1]
    for path in root.glob("test-facts-*.json"):
        entry = json.loads(path.read_text())
        entry["payload"] = {"x": "not a list"}
        entry["sha256"] = cache._digest(entry["payload"])
        path.write_text(json.dumps(entry))
    assert numeric.spec_facts("test-facts", spec, {"p": 0.5}, derive, valid) == first and len(calls) == 3
    for _ in range(2):
        assert numeric.spec_facts("test-inf", spec, {}, lambda: calls.append(1) or [float("inf")], valid) == [
            float("inf")]
    assert len(calls) == 5 and not list(root.glob("test-inf-*.json"))


def test_cached_symbolic_facts_equal_the_sympy_path(store):
    """What basins takes from SymPy beyond compiled code (critical sets in a box, the saddle of ew, an error
    saying there is none) is the same for a spec, cold (derived) and warm (from the disk), as for the Model."""
    from flowlab.engine.errors import FlowlabInputError
    from flowlab.systems.markov.basins import box_sets, unigram_saddle
    from flowlab.systems.markov.chain import MarkovChain

    chain, box, spec = MarkovChain(0.2, 0.3), {"e": (0.5, 3.0)}, ModelSpec(preset="ew")
    model = spec.build()
    direct, saddle = box_sets(model, chain, box), unigram_saddle(model)
    assert direct.global_min and direct.outside_box  # e = 0 lies outside the box
    assert np.allclose(saddle, [0.0, -1 / np.sqrt(2)], rtol=1e-15, atol=0)  # MODELS.md section 3
    for _ in range(2):
        assert box_sets(spec, chain, box) == direct
        assert np.array_equal(unigram_saddle(spec), saddle)
        with pytest.raises(FlowlabInputError, match="single saddle"):
            unigram_saddle(ModelSpec(preset="ewb"))
        _forget()
    assert {p.name.split("-")[1] for p in root_entries(store[0])} >= {"box", "unigram"}


def root_entries(root):
    return [p for p in root.iterdir() if cache.ENTRY_NAME.match(p.name)]
