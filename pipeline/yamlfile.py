"""YAML files a user writes (recipes, devices.yaml): UTF-8 text, aliases bounded at load time."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.errors import UserError

#: a recipe or inventory with aliases expanded holds a few hundred values; far more is an
#: "alias bomb" (a kilobyte of nested aliases that expands to gigabytes when dumped or hashed)
MAX_VALUES = 100_000


def read_text(path: str | Path, what: str) -> str:
    """The file's text; a file that is not UTF-8 is one error naming the file and the byte."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: the {what} is not UTF-8 text (byte 0x{data[e.start]:02x}"
                        f" at offset {e.start}); save it as UTF-8") from None


def check_size(root: yaml.Node | None, source: str) -> None:
    """Refuse a document whose aliases expand past MAX_VALUES values, or refer to themselves."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in open_nodes:
            raise UserError(f"{source}:{node.start_mark.line + 1}: a YAML alias refers to a value "
                            f"that contains it; write the value out instead")
        if key not in sizes:
            open_nodes.add(key)
            children = (node.value if isinstance(node, yaml.SequenceNode) else
                        [n for kv in node.value for n in kv] if isinstance(node, yaml.MappingNode)
                        else [])
            sizes[key] = 1 + sum(size(c) for c in children)
            open_nodes.discard(key)
        if sizes[key] > MAX_VALUES:
            raise UserError(f"{source}: YAML aliases expand to more than {MAX_VALUES:,} values "
                            f"(an alias bomb?); write the values out instead of nesting aliases")
        return sizes[key]

    if root is not None:
        size(root)


def yaml_line(node, loc: tuple, at_key: bool = False) -> int | None:
    """Line (1-based) of the key path `loc` in a composed YAML document (`yaml.compose`): where
    the value of `loc` starts (`at_key`: where its key is); when part of `loc` is not there (a
    missing key), the line of the deepest key that is; with none, the document's first line."""
    line = key_line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = key_line = node.start_mark.line + 1
            continue
        found = next(((k, v) for k, v in node.value if str(k.value) == str(key)), None) \
            if isinstance(node, yaml.MappingNode) else None
        if found is None:
            return key_line
        key_line, node = found[0].start_mark.line + 1, found[1]
        line = node.start_mark.line + 1
    return key_line if at_key else line
