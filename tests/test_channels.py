"""Structured channel pruning: graph, criteria, surgery, errors — on tiny models.

The proof of correctness: zero the channels the plan removes (filters, biases, BN gamma/beta/mean
so that they carry exactly 0 downstream), then the pruned model must compute the same outputs as
the zeroed original. Every other weight is random (BN statistics and biases included), so a
wrong slice anywhere shows up as a mismatch.
"""

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from pipeline.compress.channels import (apply_plan, channel_report, plan_channels, prune_channels,
                                        prune_channels_detailed)
from pipeline.compress.channels.surgery import keep_count
from pipeline.errors import UserError

L = keras.layers


# --- helpers (also used by test_channels_apps.py) --------------------------------------------
def randomize(model, seed=0):
    """Random BN statistics and biases (Keras initializes them to constants, hiding bad slices)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        new = []
        for var, w in zip(layer.weights, layer.get_weights()):
            short = var.name.split("/")[-1].split(":")[0]
            if short in ("gamma", "moving_variance"):
                w = rng.uniform(0.5, 1.5, w.shape)
            elif short in ("beta", "moving_mean", "bias"):
                w = rng.normal(0, 0.2, w.shape)
            new.append(w.astype(np.float32))
        layer.set_weights(new)


def zero_removed(model, plan):
    """Make the channels the plan removes carry exactly 0 from their producer onwards."""
    for layer in model.layers:
        use = plan.graph.layers.get(layer.name)
        _, out_keep = plan.layer_keeps(layer.name)
        if use is None or out_keep is None or not layer.weights:
            continue
        gone = np.setdiff1d(np.arange(layer.output_shape[-1]), out_keep)
        new = []
        for var, w in zip(layer.weights, layer.get_weights()):
            short = var.name.split("/")[-1].split(":")[0]
            w = w.copy()
            if use.kind in ("producer", "separable") and short in ("kernel", "pointwise_kernel"):
                axis = -2 if isinstance(layer, L.Conv2DTranspose) else -1
                np.moveaxis(w, axis, 0)[gone] = 0
            elif use.kind in ("producer", "separable", "depthwise", "grouped") and short == "bias":
                w[gone] = 0
            elif use.kind == "batchnorm" and short in ("gamma", "beta", "moving_mean"):
                w[gone] = 0
            new.append(w)
        layer.set_weights(new)


def check_equivalent(model, ratio=0.5, x=None, atol=1e-5, **kw):
    """Prune with a plan, zero the removed channels, compare outputs; returns (plan, pruned)."""
    randomize(model)
    plan = plan_channels(model, ratio, **kw)
    assert plan.keep, "nothing was pruned"
    zero_removed(model, plan)
    pruned = apply_plan(model, plan)
    if x is None:
        x = np.random.default_rng(1).uniform(0, 1, (3,) + tuple(model.input_shape[1:]))
    x = x.astype(np.float32)
    ref, got = model(x, training=False).numpy(), pruned(x, training=False).numpy()
    np.testing.assert_allclose(got, ref, atol=atol, rtol=1e-5)
    assert pruned.count_params() < model.count_params()
    return plan, pruned


def out_channels(model):
    return {layer.name: layer.output_shape[-1] for layer in model.layers
            if isinstance(layer, (L.Conv2D, L.Dense, L.SeparableConv2D))
            and not isinstance(layer, L.DepthwiseConv2D)}


# --- tiny models -------------------------------------------------------------------------------
def sequential_cnn():
    return keras.Sequential([
        L.Conv2D(16, 3, use_bias=False, input_shape=(10, 10, 3), name="conv2d"),
        L.BatchNormalization(name="bn"), L.ReLU(),
        L.Conv2D(24, 3, padding="same", name="conv2d_1"), L.BatchNormalization(name="bn_1"),
        L.Activation("relu"), L.MaxPooling2D(), L.Dropout(0.2), L.Flatten(),
        L.Dense(32, activation="relu", name="dense"), L.Dropout(0.1),
        L.Dense(10, activation="softmax", name="dense_1")], name="seq")


def residual():
    x = inp = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, padding="same", name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = skip = L.ReLU(name="stem_relu")(x)
    y = L.Conv2D(16, 3, padding="same", name="a")(x)
    y = L.BatchNormalization(name="a_bn")(y)
    y = L.ReLU()(y)
    y = L.Conv2D(16, 3, padding="same", name="b")(y)
    y = L.BatchNormalization(name="b_bn")(y)
    x = L.Add(name="add")([skip, y])
    x = L.ReLU()(x)
    x = L.ZeroPadding2D()(x)
    x = L.Conv2D(32, 3, strides=2, name="c")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(5, name="head")(x))


def concatenated():
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(16, 3, padding="same", name="a")(inp)
    b = L.Conv2D(24, 1, name="b")(inp)
    x = L.Concatenate(name="cat")([a, inp, b])  # the input segment is frozen: offsets matter
    x = L.BatchNormalization(name="cat_bn")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(16, 3, name="c")(x)
    x = L.GlobalMaxPooling2D()(x)
    return keras.Model(inp, L.Dense(4, name="head")(x))


def squeeze_excite():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(32, 3, padding="same", name="conv")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU()(x)
    s = L.GlobalAveragePooling2D()(x)
    s = L.Dense(16, activation="relu", name="squeeze")(s)
    s = L.Dense(32, activation="sigmoid", name="excite")(s)
    s = L.Reshape((1, 1, 32), name="gate")(s)
    x = L.Multiply(name="se")([x, s])
    x = L.Conv2D(16, 3, name="after")(x)
    x = L.Flatten()(x)
    return keras.Model(inp, L.Dense(3, name="head")(x))


def separable():
    inp = keras.Input((8, 8, 3))
    x = L.SeparableConv2D(16, 3, padding="same", name="sep1")(inp)
    x = L.BatchNormalization()(x)
    x = L.ReLU(max_value=6.0)(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.ReLU(max_value=6.0)(x)
    x = L.SeparableConv2D(32, 3, name="sep2")(x)
    x = L.Conv2DTranspose(16, 3, strides=2, name="up")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4, name="head")(x))


def hard_swish_grouped():
    """MobileNetV3-style hard-swish written with tf ops, and a depthwise Conv2D(groups=C)."""
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, padding="same", name="c1")(inp)
    gate = tf.nn.relu6(x + 3.0) * (1.0 / 6.0)
    x = L.Multiply(name="hswish")([x, gate])
    x = L.Conv2D(16, 3, padding="same", groups=16, name="dwg")(x)
    x = L.BatchNormalization(name="dwg_bn")(x)
    x = L.Conv2D(24, 1, name="c2")(x)
    return keras.Model(inp, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(x)))


# --- proof of correctness, per topology --------------------------------------------------------
def test_sequential_cnn_equivalent_with_expected_counts():
    plan, pruned = check_equivalent(sequential_cnn())
    ch = out_channels(pruned)
    assert [ch[n] for n in ("conv2d", "conv2d_1", "dense", "dense_1")] == [8, 16, 16, 10]
    assert pruned.get_layer("dense").input_shape[-1] == 16 * 4 * 4  # Flatten rows follow


def test_residual_add_shares_one_group():
    model = residual()
    plan, pruned = check_equivalent(model)
    ch = out_channels(pruned)
    assert (ch["stem"], ch["a"], ch["b"], ch["c"], ch["head"]) == (8, 8, 8, 16, 5)
    np.testing.assert_array_equal(plan.layer_keeps("stem")[1], plan.layer_keeps("b")[1])


def test_concatenate_offsets():
    plan, pruned = check_equivalent(concatenated())
    assert pruned.get_layer("cat").output_shape[-1] == 8 + 3 + 16
    assert pruned.get_layer("c").output_shape[-1] == 8


def test_squeeze_excite_gate_follows_gated_group():
    plan, pruned = check_equivalent(squeeze_excite())
    ch = out_channels(pruned)
    assert (ch["conv"], ch["squeeze"], ch["excite"], ch["after"]) == (16, 8, 16, 8)
    assert pruned.get_layer("gate").output_shape == (None, 1, 1, 16)
    np.testing.assert_array_equal(plan.layer_keeps("conv")[1], plan.layer_keeps("excite")[1])


def test_separable_depthwise_and_transpose():
    plan, pruned = check_equivalent(separable())
    ch = out_channels(pruned)
    assert (ch["sep1"], ch["sep2"], ch["up"]) == (8, 16, 8)
    assert pruned.get_layer("dw").output_shape[-1] == 8


def test_tf_ops_and_grouped_depthwise_conv():
    plan, pruned = check_equivalent(hard_swish_grouped())
    ch = out_channels(pruned)
    assert (ch["c1"], ch["dwg"], ch["c2"]) == (8, 8, 16)
    assert pruned.get_layer("dwg").groups == 8


def test_dense_only_mlp_and_per_layer_ratio():
    inp = keras.Input((12,))
    x = L.Dense(64, name="d1")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Activation("swish")(x)
    x = L.Dense(32, name="d2")(x)
    model = keras.Model(inp, L.Dense(2, name="out")(L.ReLU()(x)))
    plan, pruned = check_equivalent(model, ratio=0.25, per_layer={"d2": 0.5})
    assert out_channels(pruned) == {"d1": 48, "d2": 16, "out": 2}


def test_two_inputs_two_outputs_with_apoz():
    a, b = keras.Input((8, 8, 3), name="ia"), keras.Input((16,), name="ib")
    x = L.GlobalAveragePooling2D()(L.Conv2D(16, 3, name="ca")(a))
    z = L.Concatenate()([x, L.Dense(24, name="db")(b)])
    z = L.Dense(32, activation="relu", name="mix")(z)
    model = keras.Model([a, b], [L.Dense(3, name="o1")(z), L.Dense(1, name="o2")(L.Dense(
        16, name="h2")(z))])
    randomize(model)
    rng = np.random.default_rng(0)
    x = [rng.uniform(0, 1, (4, 8, 8, 3)).astype(np.float32),
         rng.uniform(0, 1, (4, 16)).astype(np.float32)]
    plan = plan_channels(model, 0.5, criterion="apoz", data=x)
    zero_removed(model, plan)
    pruned = apply_plan(model, plan)
    for ref, got in zip(model(x), pruned(x)):
        np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-5)
    assert out_channels(pruned) == {"ca": 8, "db": 16, "mix": 16, "h2": 8, "o1": 3, "o2": 1}


def test_conv1d_and_dense_on_sequences():
    model = keras.Sequential([L.Conv1D(16, 3, input_shape=(20, 4), name="c"),
                              L.BatchNormalization(), L.ReLU(), L.Dense(24, name="d"),
                              L.GlobalAveragePooling1D(), L.Dense(2, name="out")])
    _, pruned = check_equivalent(model)
    assert [layer.output_shape[-1] for layer in pruned.layers] == [8, 8, 8, 16, 16, 2]


def test_without_zeroing_outputs_differ():
    """The equivalence check can fail: pruning live channels changes the outputs."""
    model = residual()
    randomize(model)
    x = np.random.default_rng(1).uniform(0, 1, (3, 8, 8, 3)).astype(np.float32)
    pruned = prune_channels(model, 0.5)
    assert np.abs(pruned.predict(x, verbose=0) - model.predict(x, verbose=0)).max() > 1e-3


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn_scale", "mean_activation", "apoz"])
def test_every_criterion_removes_the_dead_channels(criterion):
    """Zeroed channels score lowest (zero norm, zero gamma, zero activation) and are removed.

    Activation criteria: a live channel that happens to be 0 on all of `x` may tie with the zeroed
    ones, but removing it changes nothing on `x` either, so outputs are compared on `x` itself.
    The Dense group is read after Flatten (positions repeated over the 4x4 grid).
    """
    model = sequential_cnn()
    randomize(model)
    plan = plan_channels(model, 0.5)
    zero_removed(model, plan)
    x = np.random.default_rng(2).uniform(0, 1, (8, 10, 10, 3)).astype(np.float32)
    pruned, report = prune_channels_detailed(model, 0.5, criterion=criterion, data=x)
    np.testing.assert_allclose(pruned(x).numpy(), model(x).numpy(), atol=1e-5)
    used = {r["producers"][0]: r["criterion"] for r in report["groups"]}
    if criterion == "bn_scale":  # the Dense group has no BN: l1, and the report says so
        assert used == {"conv2d": "bn_scale", "conv2d_1": "bn_scale",
                        "dense": "l1 (no BatchNormalization scale in group)"}
    else:
        assert set(used.values()) == {criterion}


@pytest.mark.parametrize("criterion", ["mean_activation", "apoz"])
def test_activation_criteria_remove_silent_channels(criterion):
    inp = keras.Input((6, 6, 2))
    x = L.Conv2D(16, 1, name="conv")(inp)
    x = L.ReLU()(x)
    model = keras.Model(inp, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(x)))
    kernel, bias = model.get_layer("conv").get_weights()
    kernel = np.abs(kernel) + 0.1            # inputs >= 0: every channel active ...
    dead = np.array([1, 4, 6, 9, 10, 12, 14, 15])
    kernel[..., dead] *= -1                  # ... except these, always negative -> ReLU 0
    model.get_layer("conv").set_weights([kernel, bias])
    data = np.random.default_rng(0).uniform(0, 1, (20, 6, 6, 2)).astype(np.float32)
    plan = plan_channels(model, 0.5, criterion=criterion, data=data)
    np.testing.assert_array_equal(plan.layer_keeps("conv")[1], np.setdiff1d(np.arange(16), dead))
    assert plan.rows[0]["criterion"] == criterion


# --- rounding, protection, frozen groups -------------------------------------------------------
@pytest.mark.parametrize("channels,ratio,round_to,min_channels,expected", [
    (64, 0.5, 8, 8, 32), (24, 0.5, 8, 8, 16), (16, 0.5, 8, 8, 8), (16, 0.9, 8, 8, 8),
    (10, 0.0, 8, 8, 10), (12, 0.1, 8, 8, 8), (6, 0.5, 8, 8, 6), (100, 0.3, 1, 1, 70),
    (32, 0.99, 8, 1, 1), (1280, 0.5, 8, 8, 640)])
def test_keep_count(channels, ratio, round_to, min_channels, expected):
    assert keep_count(channels, ratio, round_to, min_channels) == expected


def test_protect_keeps_layer_weights_whole():
    model = residual()
    _, report = prune_channels_detailed(model, 0.5, protect=["c"])
    pruned_ch = {r["producers"][0]: r["channels_after"] for r in report["groups"]}
    skipped = {s["producers"][0]: s["reasons"] for s in report["skipped"]}
    assert "protected layer 'c'" in skipped["c"] and "protected layer 'c'" in skipped["stem"]
    assert pruned_ch == {"a": 8}
    assert skipped["head"] == ["reaches the model output"]


def test_unsupported_layer_leaves_its_groups_unpruned():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, name="c1")(inp)
    x = L.Lambda(lambda t: t * 2.0, name="double")(x)
    x = L.Conv2D(16, 3, name="c2")(x)
    x = L.LayerNormalization(name="ln")(x)
    x = L.Conv2D(16, 3, name="c3")(x)
    model = keras.Model(inp, L.Dense(2, name="head")(L.Flatten()(x)))
    pruned, report = prune_channels_detailed(model, 0.5)
    skipped = {s["producers"][0]: s["reasons"] for s in report["skipped"]}
    assert skipped["c1"] == ["unsupported layer 'double' (Lambda)"]
    assert skipped["c2"] == ["unsupported layer 'ln' (LayerNormalization)"]
    assert [r["producers"] for r in report["groups"]] == [["c3"]]
    assert out_channels(pruned) == {"c1": 16, "c2": 16, "c3": 8, "head": 2}


def test_channel_mixing_tf_ops_are_skipped():
    inp = keras.Input((6, 6, 3))
    a = L.Conv2D(16, 1, name="a")(inp)
    b = L.Conv2D(16, 1, name="b")(inp)
    x = L.Concatenate()([a * np.arange(16, dtype=np.float32), tf.reduce_mean(b, axis=-1,
                                                                             keepdims=True)])
    model = keras.Model(inp, L.Dense(2, name="head")(L.Flatten()(x)))
    pruned, report = prune_channels_detailed(model, 0.5)
    reasons = {s["producers"][0]: s["reasons"] for s in report["skipped"]}
    (ra,), (rb,) = reasons["a"], reasons["b"]  # op layer names get a counter suffix
    assert re.fullmatch(r"'tf\.math\.multiply(_\d+)?' applies a non-scalar constant to the "
                        r"channels", ra)
    assert re.fullmatch(r"unsupported layer 'tf\.math\.reduce_mean(_\d+)?' \(TFOpLambda\)", rb)
    assert report["groups"] == []


def test_shared_and_nested_layers_are_skipped_not_broken():
    inner = keras.Sequential([L.Conv2D(8, 1, input_shape=(6, 6, 16))], name="inner")
    shared = L.Conv2D(16, 3, padding="same", name="shared")
    inp = keras.Input((6, 6, 16))
    x = L.Conv2D(16, 1, name="pre")(inp)
    x = shared(shared(x))
    x = inner(x)
    model = keras.Model(inp, L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x)))
    pruned, report = prune_channels_detailed(model, 0.5)
    reasons = {s["producers"][0]: s["reasons"] for s in report["skipped"]}
    assert reasons["pre"] == ["layer 'shared' is shared (called more than once)"]
    assert reasons["shared"] == ["layer 'shared' is shared (called more than once)",
                                 "unsupported layer 'inner' (Sequential)"]
    assert reasons["inner"] == ["unsupported layer 'inner' (Sequential)"]
    assert report["groups"] == []
    assert pruned.count_params() == model.count_params()


def test_softmax_activation_in_the_middle_is_frozen():
    model = keras.Sequential([L.Conv2D(16, 1, input_shape=(4, 4, 3), name="c"),
                              L.Softmax(name="sm"), L.Flatten(), L.Dense(2)])
    _, report = prune_channels_detailed(model, 0.5)
    assert report["skipped"][0]["reasons"] == ["unsupported layer 'sm' (Softmax)"]


def test_report_and_channel_report():
    model = sequential_cnn()
    pruned, report = prune_channels_detailed(model, 0.5)
    assert report["params_before"] == model.count_params()
    assert report["params_after"] == pruned.count_params() < model.count_params()
    rows = {r["layer"]: r for r in channel_report(model, pruned)}
    assert rows["conv2d_1"] == {"layer": "conv2d_1", "type": "Conv2D", "in_before": 16,
                                "in_after": 8, "out_before": 24, "out_after": 16,
                                "params_before": 16 * 24 * 9 + 24, "params_after": 8 * 16 * 9 + 16}
    assert rows["dense"]["in_after"] == 16 * 4 * 4


def test_pruned_model_saves_and_loads(tmp_path):
    pruned = prune_channels(residual(), 0.5)
    x = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
    pruned.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), pruned.predict(x, verbose=0))


def test_ratio_zero_changes_nothing():
    model = sequential_cnn()
    pruned, report = prune_channels_detailed(model, 0.0)
    assert pruned.count_params() == model.count_params()
    assert all(r["channels_after"] == r["channels_before"] for r in report["groups"])


# --- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,message", [
    ({"ratio": 1.5}, "Expected ratio in [0, 1). Received: ratio=1.5"),
    ({"ratio": 1}, "Expected ratio in [0, 1). Received: ratio=1"),
    ({"ratio": -0.1}, "Expected ratio in [0, 1). Received: ratio=-0.1"),
    ({"ratio": 0.5, "per_layer": {"conv2d": 2.0}},
     "Expected per_layer['conv2d'] in [0, 1). Received: per_layer['conv2d']=2.0"),
    ({"ratio": 0.5, "criterion": "bn_scales"},
     'Unknown criterion "bn_scales" (did you mean "bn_scale"?). Expected one of: l1, l2, bn_scale, '
     "mean_activation, apoz"),
    ({"ratio": 0.5, "protect": ["conv2d_2"]}, 'Unknown layer "conv2d_2" in protect (did you mean '
                                              '"conv2d_1"?)'),
    ({"ratio": 0.5, "per_layer": {"dens": 0.3}}, 'Unknown layer "dens" in per_layer (did you mean '
                                                 '"dense"?)'),
    ({"ratio": 0.5, "round_to": 0}, "Expected round_to to be a positive integer. Received: "
                                    "round_to=0"),
    ({"ratio": 0.5, "criterion": "apoz"},
     'criterion="apoz" needs calibration data: pass data=<numpy batch of model inputs>'),
    ({"ratio": 0.5, "criterion": "mean_activation", "data": np.zeros((2, 9, 9, 3))},
     "Expected data of shape (N, 10, 10, 3). Received: data.shape=(2, 9, 9, 3)"),
])
def test_bad_input_messages(kwargs, message):
    with pytest.raises(UserError) as e:
        prune_channels(sequential_cnn(), **kwargs)
    assert str(e.value) == message


def test_conflicting_per_layer_ratios_in_one_group():
    with pytest.raises(UserError, match=r"^Layers 'stem' \(ratio 0\.25\) and 'b' \(ratio 0\.5\) "
                                        r"share channels \(one group\): give them the same ratio "
                                        r"in per_layer$"):
        prune_channels(residual(), 0.5, per_layer={"stem": 0.25, "b": 0.5})


def test_subclassed_and_unbuilt_models():
    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.d = L.Dense(4)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), np.float32))
    with pytest.raises(UserError) as e:
        prune_channels(net, 0.5)
    assert str(e.value) == (
        "Channel pruning needs a Sequential or functional model; 'net' is a subclassed Net: "
        "rebuild it with keras.Sequential or the functional API")
    with pytest.raises(UserError, match=r"^Channel pruning needs a built model; call s\.build\(input_shape\) "
                                        r"or give its first layer an input_shape$"):
        prune_channels(keras.Sequential([L.Dense(4)], name="s"), 0.5)
    with pytest.raises(UserError, match=r"^Expected a tf_keras Model\. Received: model=str$"):
        prune_channels("model.keras", 0.5)
