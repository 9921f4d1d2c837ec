"""Magnitude and M:N pruning (pipeline.compress.magnitude) on a tiny digits CNN."""

import numpy as np
import pytest

import pipeline  # noqa: F401
import tf_keras as keras
from _compress_data import accuracy, digits, prune, trained_cnn

from pipeline.compress import magnitude as M
from pipeline.errors import UserError


@pytest.fixture(scope="module")
def data():
    return digits()


@pytest.fixture(scope="module")
def base(data):
    return trained_cnn(data)


# ----- schedule fitting (no training) --------------------------------------------------------------

def test_auto_frequency_fits_a_short_run():
    # 1 epoch of 1000 samples at batch 32 = 32 steps; TF-MOT's default would prune at step 100.
    plan = M.plan_schedule(32, 0.8, "polynomial")
    assert plan.frequency == 2 and plan.end_step == 24 and plan.begin_step == 0
    assert (plan.end_step - plan.begin_step) % plan.frequency == 0
    plan = M.plan_schedule(32, 0.5, "constant")
    assert plan.frequency == 3 and plan.end_step == 32


def test_tfmot_default_frequency_on_a_small_run_is_an_error():
    with pytest.raises(UserError) as e:
        M.plan_schedule(34, 0.8, "polynomial", end_step=34, frequency=100)
    assert str(e.value) == (
        "pruning frequency=100 is more than the 34 steps between begin_step=0 and end_step=34 "
        "(34 training steps): the target sparsity would never be reached. "
        "Use frequency <= 34 or leave it unset")
    with pytest.raises(UserError, match=r"^pruning frequency=100 never fires in the 34 training "
                                        r"steps \(begin_step=0, end_step=34\): the model would "
                                        r"stay dense\. Use frequency <= 34 or leave it unset$"):
        M.plan_schedule(34, 0.8, "constant", frequency=100)


def test_frequency_that_misses_the_end_step_is_an_error():
    with pytest.raises(UserError, match=r"^Expected frequency to divide end_step - begin_step "
                                        r"so the last mask update reaches the target\. Received: "
                                        r"frequency=7, begin_step=0, end_step=50; leave frequency "
                                        r"unset to fit it automatically$"):
        M.plan_schedule(100, 0.8, end_step=50, frequency=7)


@pytest.mark.parametrize("kwargs, message", [
    (dict(target_sparsity=1.5), "Expected sparsity in [0, 1). Received: sparsity=1.5"),
    (dict(target_sparsity=1.0), "Expected sparsity in [0, 1). Received: sparsity=1.0"),
    (dict(target_sparsity=-0.1), "Expected sparsity in [0, 1). Received: sparsity=-0.1"),
    (dict(target_sparsity=0.5, begin_step=20, end_step=10),
     "Expected end_step > begin_step (the schedule ends before it begins). "
     "Received: begin_step=20, end_step=10"),
    (dict(target_sparsity=0.5, schedule="polynomal"),
     'Unknown pruning schedule "polynomal" (did you mean "polynomial"?); '
     "expected one of: constant, polynomial"),
    (dict(target_sparsity=0.5, end_step=500),
     "end_step=500 is past the last of the 100 training steps: the target sparsity would never "
     "be reached. Use end_step <= 100 or leave it unset"),
])
def test_bad_schedules(kwargs, message):
    with pytest.raises(UserError) as e:
        M.plan_schedule(100, **kwargs)
    assert str(e.value) == message


# ----- pruning ------------------------------------------------------------------------------------

def test_prune_80_percent_skipping_first_and_classifier(base, data):
    _, _, xt, yt = data
    pruned, m = prune(base, data, sparsity=0.8, epochs=2, skip_first=True, skip_classifier=True)
    (plan,) = m["schedules"]
    rep = M.sparsity_report(pruned)
    assert rep["stem"] == 0.0 and rep["classifier"] == 0.0
    assert rep["conv"] == pytest.approx(0.8, abs=0.005)
    assert rep["fc"] == pytest.approx(0.8, abs=0.005)
    assert plan["total_steps"] == 64 and plan["end_step"] == 48
    # stripped: the same plain layers and names, no wrappers
    assert [l.name for l in pruned.layers] == [l.name for l in base.layers]
    assert all(type(a) is type(b) for a, b in zip(pruned.layers, base.layers))
    assert accuracy(pruned, xt, yt) >= accuracy(base, xt, yt) - 0.05
    assert M.sparsity_report(base)["conv"] == 0.0  # the input model is untouched


def test_one_short_epoch_still_prunes(base, data):
    """Regression: with TF-MOT's default frequency (100) a 4-step run never prunes."""
    pruned, m = prune(base, data, n=128, sparsity=0.5, epochs=1, schedule="constant",
                      layers=["fc"])
    (plan,) = m["schedules"]
    assert plan["total_steps"] == 4 and plan["frequency"] == 1
    assert M.sparsity_report(pruned) == {"stem": 0.0, "conv": 0.0, "fc": 0.5, "classifier": 0.0}


def test_m_by_n_2_4_checked_after_strip(base, data):
    pruned, _ = prune(base, data, n=256, method="m_by_n", m_by_n=(2, 4), epochs=1,
                      skip_first=True)
    rep = M.m_by_n_report(pruned)
    assert rep == {"stem": True, "conv": True, "fc": True, "classifier": True}
    sp = M.sparsity_report(pruned)
    assert sp["conv"] == 0.5 and sp["fc"] == 0.5 and sp["classifier"] == 0.5 and sp["stem"] == 0.0
    assert not M.m_by_n_report(base)["fc"]
    with pytest.raises(UserError) as e:  # what the stage raises when TF-MOT did not hold it
        M.require_m_by_n(base, (2, 4), ["conv", "fc"])
    assert str(e.value) == "2:4 sparsity check failed after stripping for layer(s): conv, fc"


def test_is_m_by_n_axis():
    ok = np.zeros((8, 3), np.float32)  # Dense [in=8, out=3]; groups of 4 along `in`
    ok[[0, 1, 4, 7]] = 1.0
    assert M.is_m_by_n(ok, (2, 4))
    assert not M.is_m_by_n(ok.T.copy(), (2, 4))  # now in=3, a row of 3 nonzeros in one group
    conv = np.zeros((3, 3, 4, 2), np.float32)
    conv[..., :2, :] = 1.0
    assert M.is_m_by_n(conv, (2, 4))
    conv[..., 2, 0] = 1.0
    assert not M.is_m_by_n(conv, (2, 4))


def test_sparsity_report_on_wrapped_model(base):
    plan = M.plan_schedule(10, 0.5)
    wrapped = M.apply_pruning(base, plan, layers=["fc"])
    assert sorted(M.sparsity_report(wrapped)) == ["classifier", "conv", "fc", "stem"]


# ----- bad input ----------------------------------------------------------------------------------

def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), np.float32))
    with pytest.raises(UserError) as e:
        M.apply_pruning(net, M.plan_schedule(10, 0.5))
    assert str(e.value) == (
        "pruning needs a Sequential or functional model (TF-MOT clones the layer graph); "
        "subclassed models are not supported. Received: model=Net")


def test_unknown_and_unprunable_layer_names(base):
    plan = M.plan_schedule(10, 0.5)
    with pytest.raises(UserError) as e:
        M.apply_pruning(base, plan, skip=["clasifier"])
    assert str(e.value) == ('Unknown layer "clasifier" in pruning (did you mean "classifier"?); '
                            "layers: stem, conv, flatten, fc, classifier")
    with pytest.raises(UserError) as e:
        M.apply_pruning(base, plan, layers=["flatten"])
    assert str(e.value) == ("Layer(s) flatten cannot be used for pruning; "
                            "candidates: stem, conv, fc, classifier")
    with pytest.raises(UserError, match=r"^Expected 0 < m < n in m_by_n\. Received: "
                                        r"m_by_n=\[4, 4\]$"):
        M.apply_pruning(base, m_by_n=(4, 4))
