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
                         "pipeline.stages.profile", "pipeline.stages.profile.targets",
                         "pipeline.stages.report",
                         "pipeline.stages.train"])


def _imports(path: Path) -> set[str]:
    """The `pipeline...` modules a file imports, at any depth (function-level imports count: they
    too are a dependency), except under `if TYPE_CHECKING:` (annotations only)."""
    import ast

    found: set[str] = set()

    def visit(node):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{a.name}" for a in node.names)
            found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m.split(".")[0] == "pipeline"}


def test_no_import_cycle_between_modules():
    """One direction of dependency: no two modules of pipeline/ import each other, directly or
    round a longer circle (was: compress/_keras <-> training, devices/remote <-> setup, and the
    20-file circle through stages/__init__'s registry)."""
    mods = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in (ROOT / "pipeline").rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {m: {r for r in map(resolve, _imports(p)) if r and r != m} for m, p in mods.items()}
    # a package imports its own submodules (its __init__ re-exports): not a cycle with them
    graph = {m: {d for d in deps if not d.startswith(m + ".") and not m.startswith(d + ".")}
             for m, deps in graph.items()}
    cycles, state = [], {}

    def walk(m, path):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(path[path.index(d):] + [d])
            elif d not in state:
                walk(d, path + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            walk(m, [m])
    assert cycles == []


def test_no_name_is_used_that_is_not_defined():
    """pyflakes over the package, the runner and the scripts: an undefined name is a crash waiting
    for the line that uses it (`contextlib` went missing from the tuner when `host_lock` moved
    out, and every adapt and nas run died with NameError)."""
    from pyflakes import api, messages, reporter

    class Collect(reporter.Reporter):
        def __init__(self):
            self.found = []

        def flake(self, message):
            if isinstance(message, (messages.UndefinedName, messages.UndefinedLocal,
                                    messages.UndefinedExport)):
                self.found.append(str(message))

        def unexpectedError(self, filename, msg):
            self.found.append(f"{filename}: {msg}")

        def syntaxError(self, filename, msg, lineno, offset, text):
            self.found.append(f"{filename}:{lineno}: {msg}")

    r = Collect()
    api.checkRecursive([str(ROOT / d) for d in ("pipeline", "edge_runner", "scripts", "tests")], r)
    assert r.found == []
