"""`edgepipe distill --teacher T.keras --student SPEC`: one distilled student without a recipe."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.artifacts import json_text
from pipeline.cli.common import (data_option, dataset_for_model, force_option, keras3_note,
                                 keras_output_path, save_keras, unsafe_option, validated)

#: DistillConfig field -> the option that sets it, for error messages.
_OPTION = {"student": "--student", "temperature": "--temperature", "alpha": "--alpha",
           "epochs": "--epochs", "batch_size": "--batch-size", "learning_rate": "--learning-rate",
           "optimizer": "--optimizer", "patience": "--patience", "feature_pairs": "--feature-pair",
           "feature_weight": "--feature-weight"}


def _config(**settings):
    from pipeline.stages.distill import DistillConfig

    return validated(DistillConfig, settings, _OPTION)


def _student_spec(text: str):
    """A zoo name, a model file path, or an inline YAML mapping like '{zoo: mobilenet, ...}'."""
    import yaml

    from pipeline.errors import UserError

    if text.strip() == "nas":
        raise UserError("--student nas works only inside a recipe (after a nas stage); here give "
                        "a zoo spec or the path of the nas stage's best.keras")
    if text.lstrip().startswith("{"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserError(f"--student: not a valid YAML mapping: {str(e).splitlines()[0]}") from None
    return text


def _feature_pairs(ctx, param, values) -> list[tuple[str, str]]:
    pairs = []
    for text in values:
        t, sep, s = text.partition(":")
        if not sep or not t or not s:
            raise click.BadParameter(f"expected TEACHER_LAYER:STUDENT_LAYER, got {text!r}")
        pairs.append((t, s))
    return pairs


@click.command()
@click.option("--teacher", "teacher_path", required=True, type=click.Path(exists=True),
              help="the trained teacher: .keras, .h5 or SavedModel folder")
@click.option("--student", "student_spec", required=True, metavar="SPEC",
              help="zoo name (small_cnn), inline spec '{zoo: mobilenet, options: {width: 0.35}}' "
                   "or a model file")
@data_option
@click.option("--out", type=click.Path(dir_okay=False),
              help="student .keras (default: TEACHER's name + _student.keras beside it)")
@click.option("--temperature", "-T", default=4.0, show_default=True, type=float)
@click.option("--alpha", default=0.1, show_default=True, type=float,
              help="weight of the label loss; 1-alpha goes to the teacher's soft targets")
@click.option("--epochs", default=30, show_default=True, type=int)
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--learning-rate", default=1e-3, show_default=True, type=float)
@click.option("--optimizer", default="adam", show_default=True,
              type=click.Choice(["adam", "sgd", "rmsprop"]))
@click.option("--patience", default=8, show_default=True, type=int,
              help="early stopping on validation accuracy (0: off)")
@click.option("--feature-pair", "feature_pairs", multiple=True, metavar="T_LAYER:S_LAYER",
              callback=_feature_pairs,
              help="also match this teacher layer's features with this student layer's (MSE)")
@click.option("--feature-weight", default=1.0, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@force_option
@unsafe_option
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
def distill(teacher_path, student_spec, data, out, temperature, alpha, epochs, batch_size,
            learning_rate, optimizer, patience, feature_pairs, feature_weight, seed, force, unsafe,
            as_json) -> None:
    """Train a small student against a frozen teacher (knowledge distillation)."""
    from pipeline import models, tasks
    from pipeline.stages.distill import distill as run_distill

    cfg = _config(student=_student_spec(student_spec), temperature=temperature, alpha=alpha,
                  epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                  optimizer=optimizer, patience=patience or None,
                  feature_pairs=feature_pairs,
                  feature_weight=feature_weight)
    from pipeline.modelio.graph import require_layers

    dest = keras_output_path(out, Path(teacher_path).with_name(
        f"{Path(teacher_path).stem}_student.keras"), force)
    teacher = models.load_model(teacher_path, unsafe=unsafe)
    require_layers(teacher, "distill (its teacher)")
    ds = dataset_for_model(data, teacher, seed=seed)
    student = models.from_spec(cfg.student, input_shape=ds.input_shape,
                               num_classes=tasks.student_units(ds, teacher), seed=seed)
    p = ds.task.primary
    # A fidelity task has no labels: the student is judged against the teacher's outputs (the
    # teacher, its own reference, has no score).
    reference = tasks.predict(teacher, ds.x_test)
    t_acc = tasks.evaluate(ds.task, reference, ds.y_test).get(p)
    summary = run_distill(teacher, student, ds, cfg, seed=seed)
    saved = save_keras(student, dest, ds.x_test)
    t_params, s_params = models.count_params(teacher)[0], models.count_params(student)[0]
    m = {"path": str(dest),
         p: tasks.evaluate(ds.task, tasks.predict(student, ds.x_test), ds.y_test,
                           reference=reference).get(p),
         "params": s_params, f"teacher_{p}": t_acc, "teacher_params": t_params,
         "compression": round(t_params / max(1, s_params), 3), **saved, **summary}
    if as_json:
        click.echo(json_text(m, indent=2))
    else:
        versus = f"teacher {t_acc:.4f}" if t_acc is not None else "against the teacher's outputs"
        click.echo(f"{dest}: student {p} {m[p]:.4f} ({versus}), "
                   f"{s_params} params ({m['compression']:.1f}x fewer than the teacher's "
                   f"{t_params}){keras3_note(m)}")


commands = [distill]
