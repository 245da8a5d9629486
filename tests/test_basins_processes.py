"""Basin labelling on several processes (issue 16): the same labels and stats as one process, the system
sent to the helpers by pickling (a MarkovSystem rebuilds from what it was made of), no helper process left
after an error or an interrupt, hostile ``workers`` values refused.

The grids are small; ``min_piece`` is lowered so that two processes share them.
"""

from __future__ import annotations

import math
import multiprocessing
import pickle

import numpy as np
import pytest
from test_hostile import assert_refused, run_cli
from toy_systems import HelperFails, HelperSlow, SlowStartFails, StartFails, TiltedDoubleWell

from conftest import SEPARATRIX, ref_basin, ref_energy
from flowlab import MarkovChain, get_model
from flowlab.engine.basins import FlowSettings, auto_processes, flow_labels, grid_axes, grid_points, label_points
from flowlab.engine.errors import FlowlabInputError
from flowlab.systems.markov.system import MarkovSystem

#: Pieces of this many points, so that a 24x24 grid is shared by two processes.
SMALL_PIECE = 64
#: Tolerances under which the toy's right well is entered (test_toy_basins.SETTINGS: with the default rtol the
#: integrated point jitters by ~1e-7 there and |grad L| stays above grad_tol).
TOY = {"rtol": 1e-9, "atol": 1e-12}


def both(system, points, **settings):
    """(labels, stats) with one process and with two (forced on a small grid)."""
    ref = system.reference()
    one = flow_labels(system, points, ref, FlowSettings(workers=1, **settings))
    two = flow_labels(system, points, ref, FlowSettings(workers=2, **settings), min_piece=SMALL_PIECE)
    assert one[1].pop("workers") == 1 and two[1].pop("workers") == 2
    assert not multiprocessing.active_children()
    return one, two


def test_toy_labels_identical_and_right():
    """TiltedDoubleWell: x and y decouple, so a start left of the saddle's x reaches the global (left) well
    and one right of it the local well; one and two processes give the same labels and work."""
    system = TiltedDoubleWell()
    pts = grid_points(grid_axes(system.params, {"x": (-1.7, 1.7), "y": (-1.0, 1.0)}, 24))
    (l1, s1), (l2, s2) = both(system, pts, **TOY)
    assert np.array_equal(l1, l2) and s1 == s2
    saddle = system.roots()[1]
    far = np.abs(pts[:, 0] - saddle) > 0.05
    assert far.sum() > 500
    assert np.array_equal(l2[far], np.where(pts[far, 0] < saddle, 1, 0))


@pytest.mark.parametrize("pq", [(0.1, 0.1), (0.5, 0.8)])
def test_markov_labels_identical_and_right(pq):
    """ew: the same labels and stats on one and two processes, and the analytic basins of MODELS.md section 3
    (conftest.ref_basin) away from the separatrix and the axes."""
    system = MarkovSystem(get_model("ew"), MarkovChain(*pq))
    pts = grid_points(grid_axes(system.params, {"e": (-2.5, 2.5), "w": (-2.5, 2.5)}, 24))
    (l1, s1), (l2, s2) = both(system, pts)
    assert np.array_equal(l1, l2) and s1 == s2
    checked = 0
    for (e, w), label in zip(pts, l2):
        if e != 0 and w != 0 and abs(ref_energy(e, w) - SEPARATRIX) > 0.05:
            assert label == (1 if ref_basin(*pq, e, w) == "global" else 0), (e, w)
            checked += 1
    assert checked > 400


@pytest.mark.parametrize("name, pq, context", [("ew", (0.5, 0.8), None), ("ewb", (0.1, 0.1), None),
                                               ("ew", (0.2, 0.3), 6)])
def test_markov_system_pickles_to_the_same_functions(name, pq, context):
    system = MarkovSystem(get_model(name), MarkovChain(*pq), context, symbolic_levels=name == "ew")
    system.reference()  # computed here, it travels (a helper process needs no SymPy for it)
    copy = pickle.loads(pickle.dumps(system))
    theta = np.random.default_rng(1).normal(0.0, 1.5, size=(200, len(system.params)))
    for fn in ("loss", "gradient", "hessian"):
        assert np.array_equal(getattr(system, fn)(theta), getattr(copy, fn)(theta), equal_nan=True), fn
    assert copy.reference() == system.reference() and copy.params == system.params
    assert copy.fast_profiled == system.fast_profiled and copy.describe() == system.describe()
    level = system.reference().levels["unigram"]
    below, copied = system.loss_below(level), copy.loss_below(level)
    assert (below is None) == (copied is None)
    if below is not None:
        assert np.array_equal(below(theta), pickle.loads(pickle.dumps(below))(theta))
        assert np.array_equal(below(theta), copied(theta))


def test_user_model_and_switch_travel():
    """A user model (not a preset) pickles as the model; a switched-off fast path stays off."""
    from flowlab.systems.markov.models import user_model

    system = MarkovSystem(user_model("e**2*(1 + 2*w*Abs(w))*x - e**2/2", "e,w"), MarkovChain(0.3, 0.2))
    system.fast_profiled = False
    copy = pickle.loads(pickle.dumps(system))
    theta = np.random.default_rng(2).normal(0.0, 1.0, size=(50, 2))
    assert copy.fast_profiled is False and copy.model == system.model
    assert np.array_equal(copy.gradient(theta), system.gradient(theta))


def test_a_slow_helper_piece_is_labelled_here_too_and_counted_once():
    system = HelperSlow()
    pts = grid_points(grid_axes(system.params, {"x": (-1.7, 1.7), "y": (-1.0, 1.0)}, 24))
    one, s1 = flow_labels(system, pts, system.reference(), FlowSettings(workers=1, **TOY))
    two, s2 = flow_labels(system, pts, system.reference(), FlowSettings(workers=2, **TOY), min_piece=SMALL_PIECE)
    assert np.array_equal(one, two) and s1 == {**s2, "workers": 1}
    assert not multiprocessing.active_children()


def test_helper_error_reaches_the_caller_and_no_process_remains():
    system = HelperFails()
    pts = grid_points(grid_axes(system.params, {"x": (-1.7, 1.7), "y": (-1.0, 1.0)}, 64))
    with pytest.raises(RuntimeError, match="helper process"):
        flow_labels(system, pts, system.reference(), FlowSettings(workers=2, **TOY), min_piece=SMALL_PIECE)
    assert not multiprocessing.active_children()


def test_helpers_that_cannot_start():
    """Asked for: the failure is raised; by default (optional helpers): this process labels everything."""
    from flowlab.engine.basins import _Job, _label_in_pool, _pickled, _Pieces

    system = SlowStartFails()
    pts = grid_points(grid_axes(system.params, {"x": (-1.7, 1.7), "y": (-1.0, 1.0)}, 24))
    settings = FlowSettings(workers=2, **TOY)
    with pytest.raises(Exception, match="terminated abruptly|cannot be rebuilt"):
        flow_labels(system, pts, system.reference(), settings, min_piece=SMALL_PIECE)
    assert not multiprocessing.active_children()
    system = StartFails()
    one, _ = flow_labels(system, pts, system.reference(), FlowSettings(workers=1, **TOY))
    job, labels = _Job(system, system.reference(), settings), np.full(len(pts), 9, dtype=np.int8)

    def store(piece, result):
        labels[piece[0] : piece[1]] = result[0]
        return True

    _label_in_pool(job, pts, _Pieces(len(pts), 2, 65536, SMALL_PIECE, None), store, 1, _pickled(job), True)
    assert np.array_equal(labels, one)
    assert not multiprocessing.active_children()


def test_interrupt_ends_the_helpers_and_progress_counts_every_point():
    system = TiltedDoubleWell()
    pts = grid_points(grid_axes(system.params, {"x": (-1.7, 1.7), "y": (-1.0, 1.0)}, 64))
    seen = []
    flow_labels(system, pts, system.reference(), FlowSettings(workers=2, **TOY), min_piece=SMALL_PIECE,
                progress=seen.append)
    assert seen[-1] == len(pts) and all(a <= b for a, b in zip(seen, seen[1:]))

    def interrupt(k):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        flow_labels(system, pts, system.reference(), FlowSettings(workers=2, **TOY), min_piece=SMALL_PIECE,
                    progress=interrupt)
    assert not multiprocessing.active_children()


def test_label_points_with_processes_keeps_the_pilot():
    """The pilot (1024 points, in this process) and the rest (two processes) make the labels of one run."""
    system = TiltedDoubleWell()
    pts = grid_points(grid_axes(system.params, {"x": (-1.7, 1.7), "y": (-1.0, 1.0)}, 40))
    ref = system.reference()
    one, _ = flow_labels(system, pts, ref, FlowSettings(workers=1, **TOY))
    kept, stats = label_points(system, pts, ref, FlowSettings(workers=2, **TOY), max_seconds=1e6, quiet=True, desc="t",
                               what="grid", advice="")
    assert np.array_equal(one, kept)


def test_default_rule():
    """Unset: one process below the threshold, the free available CPUs above it (at most one per min_piece
    points); set: that many processes, at most one per point."""
    import os

    s = FlowSettings()
    assert auto_processes(1000, s, threshold=10**6) == 1
    assert 1 <= auto_processes(10**7, s, min_piece=1, threshold=10) <= len(os.sched_getaffinity(0))
    assert auto_processes(100, s, min_piece=100, threshold=10) == 1
    assert auto_processes(100, FlowSettings(workers=8)) == 8
    assert auto_processes(3, FlowSettings(workers=8)) == 3


@pytest.mark.parametrize("bad", [0, -1, 10**9, "x", 1.5, True, math.nan])
def test_hostile_workers_setting(bad):
    with pytest.raises(FlowlabInputError, match="workers"):
        FlowSettings(workers=bad)


@pytest.mark.parametrize("bad", ["1000000000", "x", "0", "-1", "2.5"])
def test_hostile_workers_option(bad):
    assert_refused(*run_cli(["basins", "--p", "0.2", "--q", "0.3", "--grid", "8", "--workers", bad]))


def test_cli_help_states_the_default_threshold():
    """The --workers help names the threshold (it cannot import the engine: ``flowlab --help`` stays fast)."""
    from flowlab.cli.app import build_parser
    from flowlab.engine.basins import AUTO_PROCESS_POINTS

    sub = next(a for a in build_parser()._actions if a.dest == "command" or getattr(a, "choices", None))
    action = next(a for a in sub.choices["basins"]._actions if a.dest == "workers")
    assert str(AUTO_PROCESS_POINTS) in action.help


def test_system_from_a_spec_pickles_as_the_spec():
    """A system made from a command-line ModelSpec (no SymPy when warm) travels as that spec."""
    from flowlab.systems.markov.numeric import ModelSpec

    for spec in (ModelSpec(preset="ewa"), ModelSpec(logit="e**2*(1 + 2*w*Abs(w))*x - e**2/2", params="e,w")):
        system = MarkovSystem(spec, MarkovChain(0.3, 0.6), symbolic_levels=False)
        copy = pickle.loads(pickle.dumps(system))
        theta = np.random.default_rng(3).normal(0.0, 1.0, size=(50, len(system.params)))
        assert copy._made_of == spec
        assert np.array_equal(copy.gradient(theta), system.gradient(theta))
        assert np.array_equal(copy.loss(theta), system.loss(theta))
