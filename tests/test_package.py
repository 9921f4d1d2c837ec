"""The package's promises about imports: legacy Keras inside the pipeline, a light CLI import."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_tf_keras_is_tf_keras_inside_the_pipeline():
    code = ("import os; os.environ.pop('TF_USE_LEGACY_KERAS', None)\n"
            "import pipeline, tensorflow as tf, tf_keras\n"
            "print(os.environ['TF_USE_LEGACY_KERAS'], tf.keras.Model is tf_keras.Model)")
    assert _run(code) == "1 True"


def test_importing_the_cli_does_not_import_tensorflow():
    code = ("import sys, pipeline.cli\n"
            "print(sorted(m for m in ('tensorflow', 'tf_keras', 'keras_tuner') if m in sys.modules))")
    assert _run(code) == "[]"


def test_importing_the_recipe_or_the_engine_imports_no_stage_and_no_tfmot():
    """The registry loads a stage's module only when a recipe names it: importing the recipe or
    the engine loads none (was: all ten, TF-MOT and keras-tuner with them), and a recipe loads
    the stages it names and no other."""
    code = ("import sys, pipeline.recipe, pipeline.engine\n"
            "heavy = ('pipeline.stages', 'tensorflow_model_optimization', 'keras_tuner')\n"
            "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
            f"pipeline.recipe.load({str(ROOT / 'recipes' / 'digits.yaml')!r})\n"
            "print(sorted(m for m in sys.modules if m.startswith(heavy)))")
    before, after = _run(code).splitlines()
    assert before == "[]"
    assert after == str(["pipeline.stages", "pipeline.stages.base", "pipeline.stages.export",
                         "pipeline.stages.profile", "pipeline.stages.report",
                         "pipeline.stages.train"])
