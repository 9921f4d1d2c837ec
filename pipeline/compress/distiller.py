"""Knowledge distillation: a `tf_keras.Model` that trains a student against a frozen teacher.

    loss = alpha * CE(y, student) + (1 - alpha) * KL(softmax(t / T) || softmax(s / T)) * T**2
           [+ feature_weight * mean over pairs of MSE(project(student_feature), teacher_feature)]

KL order: the teacher's softened distribution is the *target* p, the student's is q:
KL(p || q) = sum p * (log p - log q). (Swapping them, as an old keras.io example did, trains the
student toward mode-seeking instead of matching the teacher's dark knowledge.)

How logits are found. Distillation needs pre-softmax values, but classifiers often end in softmax.
`logits_view(model)` looks at the layer that produces the model's output:
  * a `Softmax` layer, `Activation("softmax")` or `tf.nn.softmax` op layer -> its input tensor;
  * a layer with `activation="softmax"` (Dense, Conv...) -> that layer re-applied to its input
    with the activation switched to linear (same weights, nothing copied);
  * anything else -> the output itself is taken as logits (log-softmax outputs are fine too:
    softmax is shift-invariant).
A nested model whose own last layer is a softmax is refused (its logits cannot be reached).
The student itself is never modified: `Distiller.student` is the user's model, softmax and all,
and saves/loads as an ordinary Keras model.

Feature distillation: `feature_pairs=[(teacher_layer, student_layer), ...]`. Where the channel
widths differ, a learned linear projection of the student feature to the teacher's width is
trained along (a Dense on the last axis, i.e. a 1x1 convolution on NHWC maps). Projections belong
to the Distiller, never to the saved student.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import tensorflow as tf
import tf_keras as keras

from pipeline.errors import UserError, did_you_mean

__all__ = ["Distiller", "logits_view", "output_kind", "check_compatible"]


# --------------------------------------------------------------------------------------------
# logits
# --------------------------------------------------------------------------------------------
def _is_softmax_fn(fn: Any) -> bool:
    return fn is not None and getattr(fn, "__name__", "") == "softmax"


def _output_layer(model: keras.Model) -> tuple[keras.layers.Layer, int]:
    if not getattr(model, "outputs", None):
        raise UserError(f"Expected a built functional or Sequential model with a known input "
                        f"shape. Received: model={model.name!r} with no symbolic outputs")
    if len(model.outputs) != 1:
        raise UserError(f"Expected a model with one output (class scores). Received: "
                        f"model={model.name!r} with {len(model.outputs)} outputs")
    hist = model.outputs[0]._keras_history
    return hist.layer, hist.node_index


def output_kind(model: keras.Model) -> str:
    """'softmax_layer', 'softmax_activation' or 'logits': what the model's output layer is."""
    layer, _ = _output_layer(model)
    if isinstance(layer, keras.layers.Softmax):
        return "softmax_layer"
    if isinstance(layer, keras.layers.Activation) and _is_softmax_fn(layer.activation):
        return "softmax_layer"
    if type(layer).__name__ == "TFOpLambda" and getattr(layer, "symbol", "") in (
            "nn.softmax", "math.softmax"):
        return "softmax_layer"
    if _is_softmax_fn(getattr(layer, "activation", None)):
        return "softmax_activation"
    if isinstance(layer, keras.Model) and getattr(layer, "outputs", None) and \
            output_kind(layer) != "logits":
        raise UserError(f"Expected the logits of model {model.name!r} to be reachable. "
                        f"Received: its output layer {layer.name!r} is a nested model ending in "
                        f"softmax; make the softmax a top-level layer (or output logits)")
    return "logits"


class _View:
    """Calls a model's layers and returns (logits, [feature tensors]) - shares all weights."""

    def __init__(self, model: keras.Model, feature_layers: Sequence[str] = (),
                 role: str = "model"):
        self.model = model
        self.kind = output_kind(model)
        layer, node_index = _output_layer(model)
        head = model.outputs[0] if self.kind == "logits" else layer.get_input_at(node_index)
        self._act_layer = layer if self.kind == "softmax_activation" else None
        feats = [_layer_output(model, n, role) for n in feature_layers]
        if self.kind == "logits" and not feats:
            self._net = model
        else:
            self._net = keras.Model(model.inputs, [head, *feats], name=f"{model.name}_view")
        self.n_features = len(feats)

    def __call__(self, x: tf.Tensor, training: bool) -> tuple[tf.Tensor, list[tf.Tensor]]:
        out = self._net(x, training=training)
        if self.n_features == 0 and not isinstance(out, (list, tuple)):
            head, feats = out, []
        else:
            head, feats = out[0], list(out[1:])
        if self._act_layer is not None:
            head = _call_linear(self._act_layer, head)
        return head, feats


def _call_linear(layer: keras.layers.Layer, x: tf.Tensor) -> tf.Tensor:
    """`layer(x)` with its (softmax) activation switched off for this one call."""
    act = layer.activation
    layer.activation = keras.activations.linear
    try:
        return layer(x)
    finally:
        layer.activation = act


def _layer_output(model: keras.Model, name: str, role: str = "model") -> Any:
    names = [layer.name for layer in model.layers]
    if name not in names:
        raise UserError(f"Expected a layer of the {role} ({model.name!r}) for feature "
                        f"distillation. Received: layer={name!r}{did_you_mean(name, names)}")
    return model.get_layer(name).output


def logits_view(model: keras.Model):
    """A callable `(x, training) -> logits` over the model's own weights (see module doc)."""
    view = _View(model)
    return lambda x, training=False: view(x, training)[0]


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _shape(s: Any) -> tuple:
    return tuple(None if d is None else int(d) for d in s)


def check_compatible(teacher: keras.Model, student: keras.Model) -> None:
    """Raise UserError unless teacher and student agree on input shape and class count."""
    t_in, s_in = _shape(teacher.input_shape[1:]), _shape(student.input_shape[1:])
    if t_in != s_in:
        raise UserError(f"Expected the student's input shape to match the teacher's. Received: "
                        f"teacher input_shape={t_in}, student input_shape={s_in}")
    t_out, s_out = teacher.output_shape[-1], student.output_shape[-1]
    if t_out != s_out:
        raise UserError(f"Expected the student's class count to match the teacher's. Received: "
                        f"teacher num_classes={t_out}, student num_classes={s_out}")


def _check_number(name: str, value: Any, ok: bool, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok:
        raise UserError(f"Expected {name} {expected}. Received: {name}={value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------
# the Distiller
# --------------------------------------------------------------------------------------------
class Distiller(keras.Model):
    """Train `student` to match a frozen `teacher`; `call` is the student's forward pass.

    Metrics (fit/evaluate logs): loss (the weighted total), student_loss (CE at T=1),
    distillation_loss (KL * T**2), feature_loss (when feature pairs are given), accuracy
    (the student's). Integer labels < 0 mark unlabeled examples: they get the distillation
    (and feature) terms only, and count in neither student_loss nor accuracy - so images
    without labels can serve as a transfer set. Save `distiller.student`, never the Distiller.
    """

    def __init__(self, teacher: keras.Model, student: keras.Model, *, temperature: float = 4.0,
                 alpha: float = 0.1, feature_pairs: Sequence[Sequence[str]] = (),
                 feature_weight: float = 1.0, name: str = "distiller", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.temperature = _check_number(
            "temperature", temperature,
            isinstance(temperature, (int, float)) and math.isfinite(temperature)
            and temperature > 0, "> 0")
        self.alpha = _check_number(
            "alpha", alpha, isinstance(alpha, (int, float)) and 0 <= alpha <= 1, "in [0, 1]")
        self.feature_weight = _check_number(
            "feature_weight", feature_weight,
            isinstance(feature_weight, (int, float)) and math.isfinite(feature_weight)
            and feature_weight >= 0, ">= 0")
        pairs = [tuple(p) for p in feature_pairs]
        for p in pairs:
            if len(p) != 2 or not all(isinstance(n, str) for n in p):
                raise UserError(f"Expected feature pairs as [teacher_layer, student_layer]. "
                                f"Received: feature_pairs={list(feature_pairs)!r}")
        check_compatible(teacher, student)
        teacher.trainable = False
        self.teacher, self.student = teacher, student
        self.feature_pairs = pairs
        self._t_view = _View(teacher, [t for t, _ in pairs], "teacher")
        self._s_view = _View(student, [s for _, s in pairs], "student")
        self.projections = [self._projection(t, s) for t, s in pairs]

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distill_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.feature_loss_tracker = keras.metrics.Mean(name="feature_loss")
        self.accuracy_metric = keras.metrics.Accuracy(name="accuracy")

    def _projection(self, t_name: str, s_name: str) -> keras.layers.Layer | None:
        t_shape = _shape(self.teacher.get_layer(t_name).output.shape)
        s_shape = _shape(self.student.get_layer(s_name).output.shape)
        if len(t_shape) != len(s_shape) or t_shape[1:-1] != s_shape[1:-1]:
            raise UserError(f"Expected feature pair ({t_name!r}, {s_name!r}) to have the same "
                            f"shape except channels. Received: teacher {t_shape}, "
                            f"student {s_shape}")
        if t_shape[-1] == s_shape[-1]:
            return None
        proj = keras.layers.Dense(t_shape[-1], use_bias=True, name=f"project_{s_name}")
        proj.build(s_shape)
        return proj

    # ----- Keras plumbing ---------------------------------------------------------------------
    @property
    def metrics(self) -> list:
        ms = [self.loss_tracker, self.student_loss_tracker, self.distill_loss_tracker]
        if self.feature_pairs:
            ms.append(self.feature_loss_tracker)
        return ms + [self.accuracy_metric]

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.student(inputs, training=training)

    def _student_vars(self) -> list[tf.Variable]:
        proj_vars = [v for p in self.projections if p is not None for v in p.trainable_variables]
        return self.student.trainable_variables + proj_vars

    # ----- the loss ---------------------------------------------------------------------------
    def compute_losses(self, x: Any, y: Any, sample_weight: Any = None,
                       training: bool = False) -> dict[str, tf.Tensor]:
        """All loss parts for one batch; the teacher always runs with training=False."""
        x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
        t_logits, t_feats = self._t_view(x, training=False)
        t_logits = tf.stop_gradient(tf.cast(t_logits, tf.float32))
        s_logits, s_feats = self._s_view(x, training=training)
        s_logits = tf.cast(s_logits, tf.float32)
        return self._loss_parts(y, t_logits, s_logits, t_feats, s_feats, sample_weight)

    def _loss_parts(self, y, t_logits, s_logits, t_feats, s_feats, sample_weight):
        T = self.temperature
        if y.shape.rank == s_logits.shape.rank and y.shape[-1] == s_logits.shape[-1] \
                and s_logits.shape[-1] != 1:
            ce = tf.nn.softmax_cross_entropy_with_logits(tf.cast(y, tf.float32), s_logits)
            labels = tf.argmax(y, axis=-1)
            labeled = tf.ones_like(ce)
        else:  # integer labels; a negative label marks an unlabeled example (KD term only)
            labels = tf.cast(tf.reshape(y, [-1]), tf.int64)
            labeled = tf.cast(labels >= 0, tf.float32)
            labels = tf.maximum(labels, 0)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, s_logits) * labeled
        log_p = tf.nn.log_softmax(t_logits / T, axis=-1)   # teacher: the target distribution
        log_q = tf.nn.log_softmax(s_logits / T, axis=-1)   # student
        kd = tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1) * (T * T)
        per_example = self.alpha * ce + (1.0 - self.alpha) * kd
        feat = tf.zeros_like(ce)
        if self.feature_pairs:
            parts = []
            for proj, tf_, sf in zip(self.projections, t_feats, s_feats):
                sf = tf.cast(sf, tf.float32)
                if proj is not None:
                    sf = proj(sf)
                diff = tf.square(sf - tf.stop_gradient(tf.cast(tf_, tf.float32)))
                parts.append(tf.reduce_mean(tf.reshape(diff, [tf.shape(diff)[0], -1]), axis=-1))
            feat = tf.add_n(parts) / float(len(parts))
            per_example = per_example + self.feature_weight * feat
        w = tf.ones_like(ce) if sample_weight is None else \
            tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
        w_labeled = w * labeled
        n, n_labeled = tf.reduce_sum(w), tf.reduce_sum(w_labeled)
        return {"loss": tf.math.divide_no_nan(tf.reduce_sum(per_example * w), n),
                "student_loss": tf.math.divide_no_nan(tf.reduce_sum(ce * w), n_labeled),
                "distillation_loss": tf.math.divide_no_nan(tf.reduce_sum(kd * w), n),
                "feature_loss": tf.math.divide_no_nan(tf.reduce_sum(feat * w), n),
                "n": n, "n_labeled": n_labeled, "labels": labels,
                "predictions": tf.argmax(s_logits, axis=-1), "weights": w_labeled}

    def _track(self, parts: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Epoch metrics are example-weighted means (a short last batch counts for less)."""
        self.loss_tracker.update_state(parts["loss"], sample_weight=parts["n"])
        self.student_loss_tracker.update_state(parts["student_loss"],
                                               sample_weight=parts["n_labeled"])
        self.distill_loss_tracker.update_state(parts["distillation_loss"], sample_weight=parts["n"])
        if self.feature_pairs:
            self.feature_loss_tracker.update_state(parts["feature_loss"], sample_weight=parts["n"])
        self.accuracy_metric.update_state(parts["labels"], parts["predictions"],
                                          sample_weight=parts["weights"])
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
        t_logits, t_feats = self._t_view(x, training=False)   # outside the tape: no gradients
        t_logits = tf.stop_gradient(tf.cast(t_logits, tf.float32))
        t_feats = [tf.stop_gradient(f) for f in t_feats]
        variables = self._student_vars()
        with tf.GradientTape() as tape:
            s_logits, s_feats = self._s_view(x, training=True)
            s_logits = tf.cast(s_logits, tf.float32)
            parts = self._loss_parts(y, t_logits, s_logits, t_feats, s_feats, sw)
            total = parts["loss"]
            if self.student.losses:  # the student's own regularizers
                total = total + tf.add_n(self.student.losses)
        grads = tape.gradient(total, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return self._track(parts)

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
        return self._track(self.compute_losses(x, y, sw, training=False))
