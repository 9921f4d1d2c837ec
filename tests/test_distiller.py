"""pipeline.compress.distiller: the loss by hand, frozen teacher, plain saved student, features."""

import numpy as np
import pytest

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from pipeline.compress.distiller import Distiller, logits_view, output_kind
from pipeline.errors import UserError

N, C = 32, 10


def _data(n=N, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, C, n)
    return x, y


def _teacher(seed=1, bn=False):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="t_conv")(inp)
    if bn:
        h = keras.layers.BatchNormalization(name="t_bn")(h)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(C, activation="softmax", name="t_head")(h)
    return keras.Model(inp, out, name="teacher")


def _linear_teacher(seed=1):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dropout(0.5),  # must be off: teacher in inference
                             keras.layers.Dense(C, activation="softmax", name="head")],
                            name="teacher")


def _student(seed=2, softmax_layer=True, classes=C, shape=(8, 8, 1)):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input(shape), keras.layers.Conv2D(4, 3, padding="same", activation="relu",
                                                      name="s_conv"),
              keras.layers.Flatten(), keras.layers.Dense(classes, name="s_head")]
    if softmax_layer:
        layers.append(keras.layers.Activation("softmax", name="s_softmax"))
    return keras.Sequential(layers, name="student")


def _np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _hand_loss(t_logits, s_logits, y, T, alpha):
    t_logits, s_logits = t_logits.astype(np.float64), s_logits.astype(np.float64)
    ce = -_np_log_softmax(s_logits)[np.arange(len(y)), y].mean()
    log_p, log_q = _np_log_softmax(t_logits / T), _np_log_softmax(s_logits / T)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(-1).mean() * T * T          # KL(teacher || student)
    kl_swapped = (np.exp(log_q) * (log_q - log_p)).sum(-1).mean() * T * T  # the wrong order
    return alpha * ce + (1 - alpha) * kl, ce, kl, kl_swapped


def test_loss_equals_hand_computed_value_with_kl_teacher_first():
    x, y = _data()
    teacher = _linear_teacher()
    W, b = teacher.get_layer("head").get_weights()
    W, b = W * 10, b + np.linspace(-2, 2, C, dtype=np.float32)  # a confident teacher
    teacher.get_layer("head").set_weights([W, b])
    t_logits = x.reshape(N, -1) @ W + b                      # the teacher's logits, by hand
    student = _student(softmax_layer=True)
    s_logits = keras.Model(student.inputs, student.get_layer("s_head").output)(x).numpy()
    T, alpha = 3.0, 0.3
    want, ce, kl, kl_swapped = _hand_loss(t_logits, s_logits, y, T, alpha)
    assert abs(kl - kl_swapped) > 0.2 * kl  # the batch tells the two KL orders apart

    d = Distiller(teacher, student, temperature=T, alpha=alpha)
    d.compile(optimizer=keras.optimizers.SGD(0.1))
    got = d.evaluate(x, y, batch_size=N, verbose=0, return_dict=True)
    assert got["loss"] == pytest.approx(want, rel=1e-5)
    assert got["student_loss"] == pytest.approx(ce, rel=1e-5)
    assert got["distillation_loss"] == pytest.approx(kl, rel=1e-5)
    assert got["accuracy"] == pytest.approx(np.mean(s_logits.argmax(-1) == y))
    # epoch metrics weigh examples, not batches: 32 = 10 + 10 + 10 + 2 gives the same numbers
    got10 = d.evaluate(x, y, batch_size=10, verbose=0, return_dict=True)
    assert got10["loss"] == pytest.approx(want, rel=1e-5)
    assert got10["distillation_loss"] == pytest.approx(kl, rel=1e-5)
    # train_step reports the loss of the batch before its update: the same number
    hist = d.fit(x, y, batch_size=N, epochs=1, verbose=0, shuffle=False)
    assert hist.history["loss"][0] == pytest.approx(want, rel=1e-5)
    assert hist.history["distillation_loss"][0] == pytest.approx(kl, rel=1e-5)


def test_one_hot_labels_and_sample_weight():
    x, y = _data()
    teacher, student = _linear_teacher(), _student(softmax_layer=False)
    d = Distiller(teacher, student, temperature=2.0, alpha=0.5)
    sparse = d.compute_losses(x, y)["loss"].numpy()
    one_hot = d.compute_losses(x, np.eye(C, dtype=np.float32)[y])["loss"].numpy()
    assert one_hot == pytest.approx(sparse, rel=1e-6)
    w = np.zeros(N, np.float32)
    w[:5] = 1.0
    weighted = d.compute_losses(x, y, sample_weight=w)["loss"].numpy()
    assert weighted == pytest.approx(d.compute_losses(x[:5], y[:5])["loss"].numpy(), rel=1e-5)


def test_unlabeled_examples_get_the_distillation_term_only():
    x, y = _data()
    teacher, student = _linear_teacher(), _student(softmax_layer=False)
    t_logits = teacher.predict(x, verbose=0)  # probabilities: log p are logits up to a shift
    s_logits = student.predict(x, verbose=0)
    T, alpha = 2.0, 0.4
    y_partial = y.copy()
    y_partial[8:] = -1
    _, ce, _, _ = _hand_loss(np.log(t_logits[:8]), s_logits[:8], y[:8], T, alpha)
    _, _, kl, _ = _hand_loss(np.log(t_logits), s_logits, y, T, alpha)
    want = alpha * ce * 8 / N + (1 - alpha) * kl
    d = Distiller(teacher, student, temperature=T, alpha=alpha)
    d.compile(optimizer="sgd")
    got = d.evaluate(x, y_partial, batch_size=10, verbose=0, return_dict=True)
    assert got["loss"] == pytest.approx(want, rel=1e-4)
    assert got["student_loss"] == pytest.approx(ce, rel=1e-4)  # over the labeled 8 only
    assert got["accuracy"] == pytest.approx(np.mean(s_logits[:8].argmax(-1) == y[:8]))
    y_partial[8:] = -7  # which negative value does not matter
    assert d.evaluate(x, y_partial, batch_size=N, verbose=0)[0] == pytest.approx(want, rel=1e-4)


def test_teacher_frozen_student_trained():
    x, y = _data(64)
    teacher, student = _teacher(bn=True), _student()
    t_before = [w.copy() for w in teacher.get_weights()]  # incl. BN moving mean/variance
    s_before = [w.copy() for w in student.get_weights()]
    d = Distiller(teacher, student, temperature=4.0, alpha=0.1)
    d.compile(optimizer=keras.optimizers.Adam(0.01))
    d.fit(x, y, batch_size=16, epochs=2, verbose=0)
    for a, b in zip(t_before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    changed = [not np.array_equal(a, b) for a, b in zip(s_before, student.get_weights())]
    assert all(changed), changed


def test_saved_student_reloads_with_plain_load_model(tmp_path):
    x, y = _data()
    teacher, student = _teacher(), _student(softmax_layer=True)
    fd = Distiller(teacher, student, feature_pairs=[("t_conv", "s_conv")])
    fd.compile(optimizer=keras.optimizers.Adam(0.01))
    fd.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "student.keras"
    fd.student.save(path)
    reloaded = keras.models.load_model(path)  # no custom_objects
    assert [type(layer).__name__ for layer in reloaded.layers] == \
        ["Conv2D", "Flatten", "Dense", "Activation"]  # no projection, no Distiller
    assert reloaded.count_params() == student.count_params()
    want = student.predict(x, verbose=0)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), want, atol=1e-6)
    np.testing.assert_allclose(want.sum(-1), 1.0, atol=1e-5)  # still ends in its softmax


@pytest.mark.parametrize("kind", ["dense_softmax", "softmax_layer", "activation", "tf_op",
                                  "logits"])
def test_logits_view_finds_pre_softmax_values(kind):
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inp)
    dense = keras.layers.Dense(C, activation="softmax" if kind == "dense_softmax" else None)
    z = dense(h)
    out = {"dense_softmax": z, "softmax_layer": keras.layers.Softmax()(z),
           "activation": keras.layers.Activation("softmax")(z), "tf_op": tf.nn.softmax(z),
           "logits": z}[kind]
    model = keras.Model(inp, out)
    x, _ = _data(4)
    W, b = dense.get_weights()
    logits = logits_view(model)(x).numpy()
    np.testing.assert_allclose(logits, x.reshape(4, -1) @ W + b, rtol=1e-5, atol=1e-5)
    assert output_kind(model) == ("logits" if kind == "logits" else
                                  "softmax_activation" if kind == "dense_softmax" else
                                  "softmax_layer")
    assert dense.activation.__name__ == ("softmax" if kind == "dense_softmax" else "linear")


def test_feature_distillation_loss_goes_down():
    x, y = _data(64)
    teacher, student = _teacher(), _student()
    d = Distiller(teacher, student, alpha=0.5, feature_pairs=[("t_conv", "s_conv")],
                  feature_weight=1.0)
    assert d.projections[0] is not None and d.projections[0].kernel.shape == (4, 8)
    d.compile(optimizer=keras.optimizers.Adam(0.02))
    hist = d.fit(x, y, batch_size=32, epochs=15, verbose=0).history
    assert set(hist) == {"loss", "student_loss", "distillation_loss", "feature_loss", "accuracy"}
    assert hist["feature_loss"][-1] < 0.5 * hist["feature_loss"][0], hist["feature_loss"]
    assert hist["loss"][-1] < hist["loss"][0]


def _raises(msg, **kw):
    args = dict(teacher=_linear_teacher(), student=_student())
    args.update(kw)
    with pytest.raises(UserError) as e:
        Distiller(args.pop("teacher"), args.pop("student"), **args)
    assert str(e.value) == msg


def test_validation_messages():
    _raises("Expected temperature > 0. Received: temperature=0", temperature=0)
    _raises("Expected temperature > 0. Received: temperature=-1.5", temperature=-1.5)
    _raises("Expected temperature > 0. Received: temperature=nan", temperature=float("nan"))
    _raises("Expected alpha in [0, 1]. Received: alpha=1.5", alpha=1.5)
    _raises("Expected alpha in [0, 1]. Received: alpha=-0.1", alpha=-0.1)
    _raises("Expected the student's input shape to match the teacher's. Received: teacher "
            "input_shape=(8, 8, 1), student input_shape=(9, 9, 1)",
            student=_student(shape=(9, 9, 1)))
    _raises("Expected the student's class count to match the teacher's. Received: teacher "
            "num_classes=10, student num_classes=5", student=_student(classes=5))
    _raises("Expected a layer of the teacher ('teacher') for feature distillation. "
            "Received: layer='t_cnv' (did you mean \"t_conv\"?)",
            teacher=_teacher(), feature_pairs=[("t_cnv", "s_conv")])
    _raises("Expected feature pair ('t_conv', 's_head') to have the same shape except channels. "
            "Received: teacher (None, 8, 8, 8), student (None, 10)",
            teacher=_teacher(), feature_pairs=[("t_conv", "s_head")])
    Distiller(_linear_teacher(), _student(), alpha=0, temperature=0.5)  # the edges are valid
    Distiller(_linear_teacher(), _student(), alpha=1)
