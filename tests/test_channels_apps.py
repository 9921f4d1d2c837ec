"""Channel pruning on keras.applications architectures (weights=None, 32x32 inputs).

Same proof as test_channels.py: zero what the plan removes, prune, outputs (logits, so that a
saturated softmax cannot hide a difference) match within 1e-5,
and the channel counts are the ones the rounding rule gives.
"""

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import pytest
import tf_keras as keras

from test_channels import check_equivalent, out_channels

L = keras.layers


def expected(channels: int, ratio: float = 0.5) -> int:
    """The documented rule, written out independently: nearest multiple of 8, at least 8."""
    return min(channels, max(8, int(channels * (1 - ratio) / 8 + 0.5) * 8))


@pytest.mark.slow
def test_mobilenet_v2():
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
                                           classes=10, classifier_activation=None)
    before = out_channels(model)
    plan, pruned = check_equivalent(model)
    after = out_channels(pruned)
    assert after == {n: (c if n == "predictions" else expected(c)) for n, c in before.items()}
    assert (before["Conv1"], after["Conv1"]) == (16, 8)
    assert (before["Conv_1"], after["Conv_1"]) == (1280, 640)
    assert (before["block_16_expand"], after["block_16_expand"]) == (336, 168)
    # the projections of one stage meet in Add: one group, the same kept indices
    np.testing.assert_array_equal(plan.layer_keeps("block_1_project")[1],
                                  plan.layer_keeps("block_2_project")[1])
    assert pruned.count_params() < 0.5 * model.count_params()


@pytest.mark.slow
def test_resnet50():
    model = keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None, classes=10,
                                      classifier_activation=None)
    before = out_channels(model)
    plan, pruned = check_equivalent(model, x=np.random.default_rng(1).uniform(0, 1, (2, 32, 32, 3)))
    after = out_channels(pruned)
    assert after == {n: (c if n == "predictions" else expected(c)) for n, c in before.items()}
    assert (after["conv1_conv"], after["conv2_block1_0_conv"], after["conv5_block3_3_conv"]) == (
        32, 128, 1024)
    for a, b in [("conv2_block1_0_conv", "conv2_block3_3_conv"),
                 ("conv5_block1_0_conv", "conv5_block3_3_conv")]:
        np.testing.assert_array_equal(plan.layer_keeps(a)[1], plan.layer_keeps(b)[1])
    assert pruned.count_params() < 0.3 * model.count_params()
