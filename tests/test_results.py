"""Every result type is frozen, carries a status and a message, and survives pickling (issue 12).

Pickling must keep the data: the round trip is checked on ``as_dict()`` (or the fields), which is
what a user reads back. A result holding a closure or a compiled function would fail here.
"""

import dataclasses
import json
import pickle

import numpy as np
import pytest

import flowlab


def _as_json(result):
    data = result.as_dict() if hasattr(result, "as_dict") else dataclasses.asdict(result)
    return json.dumps(data, sort_keys=True, default=lambda a: np.asarray(a).tolist())


def _check(result):
    assert dataclasses.is_dataclass(result)
    assert type(result).__dataclass_params__.frozen, type(result).__name__
    assert isinstance(result.message, str) and result.message
    assert result.status is not None
    name = dataclasses.fields(result)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(result, name, None)
    copy = pickle.loads(pickle.dumps(result))
    assert type(copy) is type(result)
    assert _as_json(copy) == _as_json(result)


@pytest.fixture(scope="module")
def ew():
    return flowlab.get_model("ew"), flowlab.MarkovChain(0.5, 0.8)


def test_markov_flow_result(ew):
    _check(flowlab.gradient_flow(*ew, [0.1, 0.1]))


def test_engine_flow_result_of_a_non_markov_system():
    from toy_systems import TiltedDoubleWell

    from flowlab.engine.trajectory import gradient_flow

    _check(gradient_flow(TiltedDoubleWell(), [-0.5, 0.3]))


def test_critical_result_drops_only_its_membership_test(ew):
    res = flowlab.critical_sets(flowlab.get_model("ewb"), ew[1])
    assert any(s.member is not None for s in res.sets)
    _check(res)
    assert all(s.member is None for s in pickle.loads(pickle.dumps(res)).sets)


def test_basin_results(ew):
    _check(flowlab.basin_grid(*ew, {"e": (-3, 3), "w": (-3, 3)}, 12, quiet=True))
    _check(flowlab.gaussian_basin(*ew, sigma=0.02, samples=40, seed=0))


def test_batch_and_numeric_critical_results():
    from toy_systems import TiltedDoubleWell

    from flowlab.engine.batch import integrate_batch
    from flowlab.engine.critical import find_numeric

    toy = TiltedDoubleWell()
    batch = integrate_batch(lambda y: -toy.gradient(y), np.array([[-0.5, 0.1], [0.5, 0.1]]), t_max=5.0)
    _check(batch)
    _check(find_numeric(toy, np.array([-2.0, -1.0]), np.array([2.0, 1.0]), starts=16))


def test_training_result(ew):
    _check(flowlab.sgd_canonical(ew[1], [0.3, -1.0, 0.0], steps=20, log_every=10, seed=0))


def test_landscape_result(ew):
    from flowlab.systems.markov.landscape import landscape

    _check(landscape(*ew, resolution=24))


def test_system_results_of_cooccurrence_and_ntp_order():
    from flowlab.systems import ntp_order as no
    from flowlab.systems.cooccurrence.experiments import compare

    _check(compare(m=4, m1=8, n=6, L=3, d=24, t_units=50.0, n_out=8))
    _check(no.run_experiment(no.generate(6, 14, seed=4), steps1=40, steps2=40))


def test_a_reference_pickles_and_its_levels_are_read_only():
    from flowlab.engine.system import Reference

    ref = Reference(0.5, {"unigram": 0.6}, loss_tol=1e-9, source="closed form", complete=True)
    copy = pickle.loads(pickle.dumps(ref))
    assert copy == ref and copy.as_dict() == ref.as_dict() and copy.nonglobal_level == 0.6
    with pytest.raises(TypeError):
        ref.levels["x"] = 1.0  # read-only mapping
