"""YAML with line numbers: text in, plain values plus a path -> line map out.

Owns turning manifest text into JSON-like values (dict, list, str, int, float, bool,
None) while remembering where every key and list item was written, so that schema and
rule errors can point at a line. Deliberately knows nothing of the manifest's schema.

Why not `yaml.safe_load`: it loses positions and silently keeps the last of two equal
keys, and a typo'd duplicate must be an error. We compose to nodes (libyaml when
available) and build the values ourselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from batchgen.errors import Problem

#: A location inside a document: keys and list indexes from the root.
JsonPath = tuple[str | int, ...]

#: Values after expanding aliases; guards against "billion laughs" documents.
MAX_VALUES = 2_000_000
#: Nesting depth; a manifest is four or five levels deep.
MAX_DEPTH = 64

_TAG = "tag:yaml.org,2002:"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class ParsedYaml:
    """A document's values and the 1-based line of each key or item, by path."""

    value: Any
    lines: dict[JsonPath, int]

    def line_of(self, path: JsonPath) -> int:
        """Line of the deepest known prefix of `path` (the document start if none)."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return self.lines.get((), 1)


class _Aborted(Exception):
    """Internal: building values stopped at a problem already recorded."""


def parse_yaml(text: str, file: str) -> tuple[ParsedYaml | None, list[Problem]]:
    """Parse one YAML document; return its values or the problems that stop it."""
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = f"not valid YAML: {exc.problem or exc.context or 'syntax error'}"
        return None, [Problem(file, line, "", what, "fix the YAML syntax at this line")]
    except yaml.YAMLError as exc:
        return None, [Problem(file, 1, "", f"not valid YAML: {exc}", "fix the YAML syntax")]
    except RecursionError:
        return None, [Problem(file, 1, "", "not valid YAML: nested too deeply",
                              "a manifest needs only a few levels; check the brackets")]
    if node is None:
        return None, [Problem(file, 1, "", "the manifest is empty",
                              "start with `version: 1` and add jobs; see manifests/example.yaml")]
    builder = _Builder(file)
    if "&" in text:  # without an anchor there is no alias, so nothing can blow up
        builder.check_size(node)
        if builder.problems:
            return None, builder.problems
    try:
        value = builder.build(node, (), 0)
    except _Aborted:
        return None, builder.problems
    return ParsedYaml(value, builder.lines), builder.problems


class _Builder:
    """Builds plain values from nodes and records the line of every path."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[JsonPath, int] = {(): 1}
        self.problems: list[Problem] = []
        self.constructor = SafeConstructor()

    def fail(self, node: yaml.Node, what: str, fix: str) -> None:
        self.problems.append(Problem(self.file, node.start_mark.line + 1, "", what, fix))

    def check_size(self, root: yaml.Node) -> None:
        """Refuse alias cycles and documents whose aliases expand to too many values.

        Sizes are computed per node with memoisation, so a "billion laughs" document is
        refused in time linear in its text, before anything is expanded.
        """
        sizes: dict[int, int] = {}
        on_path: set[int] = set()
        stack: list[tuple[yaml.Node, bool]] = [(root, False)]
        while stack:
            node, children_done = stack.pop()
            key = id(node)
            children = _children(node)
            if children_done:
                on_path.discard(key)
                sizes[key] = 1 + sum(sizes[id(c)] for c in children)
                if sizes[key] > MAX_VALUES:
                    self.fail(root, f"the document expands to more than {MAX_VALUES:,} values",
                              "use fewer aliases, or a jobs_file for long job lists")
                    return
                continue
            if key in sizes:
                continue
            on_path.add(key)
            stack.append((node, True))
            for child in children:
                if id(child) in on_path:
                    self.fail(child, "an alias that contains itself",
                              "remove the self-reference")
                    return
                if id(child) not in sizes:
                    stack.append((child, False))

    def build(self, node: yaml.Node, path: JsonPath, depth: int) -> Any:
        if depth > MAX_DEPTH:
            self.fail(node, f"nested more than {MAX_DEPTH} levels deep",
                      "a manifest needs only a few levels; check the indentation")
            raise _Aborted
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if isinstance(node, yaml.SequenceNode):
            out = []
            for i, item in enumerate(node.value):
                self.lines[(*path, i)] = item.start_mark.line + 1
                out.append(self.build(item, (*path, i), depth + 1))
            return out
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path, depth)
        raise _Aborted  # pragma: no cover - composer yields only these three kinds

    def scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag
        try:
            if tag == _TAG + "int":
                return self.constructor.construct_yaml_int(node)
            if tag == _TAG + "float":
                return self.constructor.construct_yaml_float(node)
            if tag == _TAG + "bool":
                return self.constructor.construct_yaml_bool(node)
            if tag == _TAG + "null":
                return None
        except (ConstructorError, ValueError):
            self.fail(node, f"{node.value!r} is not a valid {tag.removeprefix(_TAG)}",
                      "remove the explicit tag or fix the value")
            raise _Aborted from None
        # str, timestamps, binary and unknown tags stay text: the schema decides.
        return node.value

    def mapping(self, node: yaml.MappingNode, path: JsonPath, depth: int) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        own: dict[str, Any] = {}
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                merged.update(self.merge_sources(value_node, path, depth))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.fail(key_node, "a key that is a list or mapping",
                          "keys must be plain words such as `resolution`")
                raise _Aborted
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                self.fail(key_node, f"duplicate key {key!r} (first at line {seen[key]})",
                          "keep one of them; YAML would silently use only the last")
                continue
            seen[key] = line
            self.lines[(*path, key)] = line
            own[key] = self.build(value_node, (*path, key), depth + 1)
        if merged:
            return {**merged, **own}
        return own

    def merge_sources(self, node: yaml.Node, path: JsonPath, depth: int) -> dict[str, Any]:
        """Values of a `<<: *anchor` (or a list of anchors; the first one wins)."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        out: dict[str, Any] = {}
        for source in reversed(sources):
            if not isinstance(source, yaml.MappingNode):
                self.fail(source, "`<<` merges only mappings",
                          "point `<<` at an anchored mapping")
                raise _Aborted
            out.update(self.mapping(source, path, depth))
        return out


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []

