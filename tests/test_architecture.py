"""The house: a folder per job, arrows only downwards, no circle between folders.

Imports are read from the source, not by importing it, so that imports inside functions and
under ``TYPE_CHECKING`` count as much as those at the top of a module. The floors are the ones
docs/ARCHITECTURE.md draws.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from smner.deprecated import MOVED_MODULES

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "smner"

#: Floors from the bottom up; a room imports only from rooms on lower floors (and itself).
FLOORS: list[tuple[str, ...]] = [
    ("errors", "version"),
    ("extras", "fileio", "deprecated"),
    ("config",),
    ("data",),
    ("encoders", "synth"),
    ("saved",),
    ("processing",),
    ("model",),
    ("predict",),
    ("evaluation",),
    ("training",),
    ("integrations", "serve"),
    ("commands",),
    ("cli",),
    ("__main__", "__init__"),
]
FLOOR_OF = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}
MAX_TOP_LEVEL_FILES = 8


def module_name(path: Path) -> str:
    parts = ["smner", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room_of(module: str) -> str:
    """``smner.predict.loop`` -> ``predict``; ``smner.errors`` -> ``errors``; ``smner`` ->
    ``__init__`` (the package face)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(path: Path) -> set[tuple[str, int]]:
    """Every smner module ``path`` imports, with the line, wherever the import statement is."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module_name(path).split(".")[: -1 if path.name != "__init__.py" else None]
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add((target, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add((node.args[0].value, node.lineno))
    return {(name, line) for name, line in found if name == "smner" or name.startswith("smner.")}


def lazy_targets(path: Path) -> set[tuple[str, int]]:
    """Module names held as strings in a ``_LAZY`` table (resolved with import_module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            found.update(
                (value.value, value.lineno)
                for value in node.value.values
                if isinstance(value, ast.Constant) and isinstance(value.value, str)
            )
    return found


def room_arrows() -> dict[tuple[str, str], list[str]]:
    """(from room, to room) -> the ``file:line`` places that draw the arrow."""
    arrows: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        source = room_of(module_name(path))
        for target, line in imported_modules(path) | lazy_targets(path):
            destination = room_of(target)
            if destination != source:
                arrows[(source, destination)].append(f"{path.relative_to(PACKAGE)}:{line}")
    return arrows


def test_every_room_has_a_floor() -> None:
    rooms = {room_of(module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert rooms - FLOOR_OF.keys() == set(), "add the new room to FLOORS and ARCHITECTURE.md"


def test_no_arrow_points_up_or_sideways() -> None:
    wrong = [
        f"{source} -> {destination} ({', '.join(places)})"
        for (source, destination), places in sorted(room_arrows().items())
        if FLOOR_OF[destination] >= FLOOR_OF[source]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_circle_between_folders() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for source, destination in room_arrows():
        graph[source].add(destination)
    done: set[str] = set()

    def visit(room: str, trail: list[str]) -> list[str] | None:
        if room in trail:
            return [*trail[trail.index(room) :], room]
        if room in done:
            return None
        for nxt in sorted(graph[room]):
            circle = visit(nxt, [*trail, room])
            if circle:
                return circle
        done.add(room)
        return None

    circles = [c for room in sorted(graph) if (c := visit(room, []))]
    assert circles == [], " -> ".join(circles[0])


def test_the_package_face_holds_few_files() -> None:
    files = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(files) <= MAX_TOP_LEVEL_FILES, files


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import smner.model.base\n", {("smner.model.base", 1)}),
        ("if TYPE_CHECKING:\n    from smner.predict import x\n", {("smner.predict", 2)}),
        ("def f():\n    from smner.training.trainer import t\n", {("smner.training.trainer", 2)}),
        ("importlib.import_module('smner.serve')\n", {("smner.serve", 1)}),
        ("import numpy\n", set()),
    ],
)
def test_the_reader_sees_every_kind_of_import(
    tmp_path: Path, source: str, expected: set[tuple[str, int]]
) -> None:
    file = tmp_path / "probe.py"
    file.write_text(source)
    assert imported_modules(file) == expected


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_old_module_paths_import_the_new_module_with_a_warning(old: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=MOVED_MODULES[old].replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED_MODULES[old])


def test_the_public_names_did_not_move() -> None:
    import smner

    assert smner.Predictor.__module__ == "smner.predict.predictor"
    assert smner.Processor.__module__ == "smner.processing.processor"
    assert callable(smner.train) and callable(smner.read_conll)
    from smner.predict import Predictor
    from smner.training import train

    assert Predictor is smner.Predictor and train is smner.train
