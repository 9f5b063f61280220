"""The code's shape against issue 12's size targets, measured with `ast` (no imports run).

Targets (issue 12, item 3): no module over ~300 lines, no function over ~60 lines, no class
with more than a dozen attributes. Prints one row per module (lines, functions, longest
function, functions and classes over the limits), then every function and class over a
limit, so a reviewer can re-run the figures a closing note quotes.

* Module lines: physical lines of the file (`wc -l`).
* Function lines: from its first decorator (or `def`) to its last line, docstring and
  comments included; nested functions and methods are measured on their own as well
  (a method is named `Class.method`, a nested function `outer.<locals>.inner`).
* Class attributes: the distinct names a class holds state in: fields declared in its body
  (`x: int`, `x = ...`, `__slots__` entries; `ClassVar`s, enum members and private
  constants in ALL_CAPS are not state) plus every `self.x = ...` / `self.x: T = ...` /
  `self.x += ...` in its methods. Methods and properties are not attributes.

Usage: python bench/code_shape.py [PACKAGE_DIR ...] [--max-module 300]
       [--max-function 60] [--max-attributes 12] [--check]
`--check` exits 1 when anything is over a limit (it is a measurement, not a CI gate today).
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENUM_BASES = {"Enum", "StrEnum", "IntEnum", "Flag", "IntFlag"}


@dataclass
class ModuleShape:
    path: str
    lines: int
    functions: list[tuple[str, int, int]] = field(default_factory=list)  # name, line, length
    classes: list[tuple[str, int, list[str]]] = field(default_factory=list)  # name, line, attrs


def _length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return (node.end_lineno or node.lineno) - first + 1


def _is_classvar(annotation: ast.expr) -> bool:
    target = annotation.value if isinstance(annotation, ast.Subscript) else annotation
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
    return name == "ClassVar"


def _base_names(node: ast.ClassDef) -> set[str]:
    names = set()
    for base in node.bases:
        if isinstance(base, ast.Name):
            names.add(base.id)
        elif isinstance(base, ast.Attribute):
            names.add(base.attr)
    return names


def _self_targets(target: ast.expr) -> list[str]:
    """Names `self.NAME` assigned by one assignment target (tuples unpacked)."""
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
            and target.value.id == "self":
        return [target.attr]
    if isinstance(target, ast.Tuple | ast.List):
        return [n for elt in target.elts for n in _self_targets(elt)]
    return []


def class_attributes(node: ast.ClassDef) -> list[str]:
    """The distinct state attributes of a class (see the module docstring)."""
    is_enum = bool(_base_names(node) & ENUM_BASES)
    names: dict[str, None] = {}
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            if not _is_classvar(stmt.annotation):
                names[stmt.target.id] = None
        elif isinstance(stmt, ast.Assign) and not is_enum:
            for target in stmt.targets:
                if not isinstance(target, ast.Name):
                    continue
                if target.id == "__slots__" and isinstance(stmt.value, ast.Tuple | ast.List):
                    for elt in stmt.value.elts:
                        if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                            names[elt.value] = None
                elif not target.id.isupper() and not target.id.startswith("__"):
                    names[target.id] = None
    for stmt in node.body:
        if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for sub in ast.walk(stmt):
            if isinstance(sub, ast.Assign):
                targets = sub.targets
            elif isinstance(sub, ast.AnnAssign | ast.AugAssign):
                targets = [sub.target]
            else:
                continue
            for target in targets:
                for name in _self_targets(target):
                    names[name] = None
    return list(names)


def measure(path: Path, root: Path) -> ModuleShape:
    source = path.read_text(encoding="utf-8")
    shape = ModuleShape(str(path.relative_to(root)), len(source.splitlines()))

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                shape.functions.append((name, child.lineno, _length(child)))
                visit(child, f"{name}.<locals>.")
            elif isinstance(child, ast.ClassDef):
                name = f"{prefix}{child.name}"
                shape.classes.append((name, child.lineno, class_attributes(child)))
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=str(path)), "")
    return shape


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="*", type=Path, default=[ROOT / "batchgen"])
    parser.add_argument("--max-module", type=int, default=300)
    parser.add_argument("--max-function", type=int, default=60)
    parser.add_argument("--max-attributes", type=int, default=12)
    parser.add_argument("--check", action="store_true", help="exit 1 when over a limit")
    args = parser.parse_args(argv)

    shapes = [measure(p, ROOT if p.resolve().is_relative_to(ROOT) else p.parent)
              for d in args.dirs for p in sorted(d.resolve().rglob("*.py"))]
    header = (f"{'module':<34} {'lines':>5} {'funcs':>5} {'longest function':<38} "
              f"{'>' + str(args.max_function):>4} {'cls>' + str(args.max_attributes):>6}")
    print(header)
    print("-" * len(header))
    over_functions: list[tuple[str, str, int, int]] = []
    over_classes: list[tuple[str, str, int, list[str]]] = []
    for s in shapes:
        longest = max(s.functions, key=lambda f: f[2], default=("-", 0, 0))
        long_funcs = [f for f in s.functions if f[2] > args.max_function]
        big_classes = [c for c in s.classes if len(c[2]) > args.max_attributes]
        over_functions += [(s.path, *f) for f in long_funcs]
        over_classes += [(s.path, *c) for c in big_classes]
        flag = " *" if s.lines > args.max_module else ""
        print(f"{s.path:<34} {s.lines:>5} {len(s.functions):>5} "
              f"{(longest[0] + ' ' + str(longest[2]))[:38]:<38} {len(long_funcs):>4} "
              f"{len(big_classes):>6}{flag}")
    total = sum(s.lines for s in shapes)
    big_modules = [s for s in shapes if s.lines > args.max_module]
    print("-" * len(header))
    print(f"{len(shapes)} modules, {total} lines; over {args.max_module} lines (*): "
          f"{len(big_modules)}; functions over {args.max_function} lines: "
          f"{len(over_functions)}; classes over {args.max_attributes} attributes: "
          f"{len(over_classes)}")
    if over_functions:
        print(f"\nfunctions over {args.max_function} lines:")
        for path, name, line, length in sorted(over_functions, key=lambda f: -f[3]):
            print(f"  {length:>4}  {path}:{line} {name}")
    if over_classes:
        print(f"\nclasses over {args.max_attributes} attributes:")
        for path, name, line, attrs in sorted(over_classes, key=lambda c: -len(c[3])):
            print(f"  {len(attrs):>4}  {path}:{line} {name}: {', '.join(attrs)}")
    over = big_modules or over_functions or over_classes
    return 1 if args.check and over else 0


if __name__ == "__main__":
    sys.exit(main())
