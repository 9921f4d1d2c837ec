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
