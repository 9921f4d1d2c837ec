"""The README's examples stay true: its recipe is the default recipe, its stage table is whole."""

import re
from pathlib import Path

from pipeline import recipe
from pipeline.registry import STAGES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_annotated_recipe_is_the_default_recipe():
    block = README.split("```yaml\n# recipes/digits.yaml, annotated", 1)[1].split("```", 1)[0]
    block = block.split("\n", 1)[1]  # past the title comment
    shown = recipe.parse(block)
    default = recipe.load(ROOT / "recipes" / "digits.yaml")
    assert shown.to_json() == default.to_json()


def test_the_stage_table_is_one_table_naming_every_stage():
    section = README.split("### Stages", 1)[1].split("\n#", 1)[0]
    rows = [ln for ln in section.strip().splitlines() if ln.startswith("|")]
    table = section.strip().split("\n\n")[0]  # a blank line would end the table there
    assert table.count("\n") + 1 == len(rows)
    named = re.findall(r"^\| `(\w+)` \|", table, flags=re.M)
    assert sorted(named) == sorted(STAGES)


def test_the_python_example_uses_only_the_public_api():
    """The README's Python example of edgepipe imports `pipeline.api` and nothing else, and every
    name it uses from there is one the API exports. (Other Python blocks, using Keras alone, name
    no `pipeline` module.)"""
    import ast

    from pipeline import api

    blocks = [b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if "pipeline" in b]
    assert len(blocks) == 1
    tree = ast.parse(blocks[0])
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [(n.module, [a.name for a in n.names]) for n in imports] == [("pipeline", ["api"])]
    used = {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and getattr(n.value, "id", None) == "api"}
    assert used and used <= set(api.__all__), used - set(api.__all__)
    assert all(getattr(api, name).__doc__ for name in api.__all__)
