"""Imports point one way: apis -> conversations -> networks, messagers -> utils; messagers do no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {
    "apis": {"apis", "conversations", "networks", "messagers", "utils", "emulator"},
    "conversations": {"conversations", "networks", "messagers", "utils"},
    "networks": {"networks", "utils"},
    "messagers": {"messagers", "utils"},
    "utils": {"utils"},
}
IO_LIBRARIES = {"httpx", "websockets", "asyncio", "socket", "fastapi", "starlette", "logging"}
PROJECT = set(ALLOWED) | {"emulator", "tests"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package: str) -> None:
    for path in (ROOT / package).glob("*.py"):
        project_imports = imported_roots(path) & PROJECT
        assert project_imports <= ALLOWED[package], (
            f"{path.name} imports {project_imports - ALLOWED[package]}"
        )


def test_translators_do_no_io() -> None:
    for path in (ROOT / "messagers").glob("*.py"):
        assert not imported_roots(path) & IO_LIBRARIES, path.name
