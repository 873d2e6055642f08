"""The layering of DESIGN.md section 2, checked by walking every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "goniec"

# Modules that do no I/O: they may not import these (DESIGN.md 3.1).
IO_MODULES = {"asyncio", "socket", "ssl", "os", "time", "selectors", "subprocess", "threading",
              "uvloop", "datetime"}
PURE_PACKAGES = ("protocol", "policy")
# Only the composition root (and the CLI, which reads the spool directly as the
# issue allows) may name a concrete backend.
BACKENDS = {"goniec.queue.fs", "goniec.queue.sql"}
BACKEND_USERS = {"app.py", "cli", "testing"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_pure_layers_do_no_io() -> None:
    for package in PURE_PACKAGES:
        for path in (SRC / package).rglob("*.py"):
            bad = {n for n in imports(path) if n.split(".")[0] in IO_MODULES}
            assert not bad, f"{path.relative_to(SRC)} imports I/O modules {bad}"


def test_protocol_and_policy_do_not_import_each_other() -> None:
    for a, b in (("protocol", "policy"), ("policy", "protocol")):
        for path in (SRC / a).rglob("*.py"):
            bad = {n for n in imports(path) if n.startswith(f"goniec.{b}")}
            assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_lower_layers_do_not_import_higher_ones() -> None:
    lower = {"errors.py", "model.py", "replies.py"}
    for name in lower:
        path = SRC / name
        if path.exists():
            layer0 = {"goniec." + m.removesuffix(".py") for m in lower}
            bad = {n for n in imports(path)
                   if n.startswith("goniec.") and n.rsplit(".", 1)[0] not in layer0
                   and n not in layer0}
            assert not bad, f"{name} is layer 0 but imports {bad}"
    for path in list((SRC / "protocol").rglob("*.py")) + list((SRC / "policy").rglob("*.py")):
        bad = {n for n in imports(path)
               if n.startswith(("goniec.server", "goniec.queue", "goniec.app", "goniec.cli",
                                "goniec.admin", "goniec.config.load"))}
        assert not bad, f"{path.relative_to(SRC)} imports a higher layer: {bad}"


def test_only_the_composition_root_names_backends() -> None:
    for path in modules():
        rel = path.relative_to(SRC)
        if rel.parts[0] in BACKEND_USERS or rel.parts[0] == "queue":
            continue
        bad = imports(path) & BACKENDS
        assert not bad, f"{rel} names a concrete backend {bad}"


def test_production_code_never_imports_testing() -> None:
    for path in modules():
        rel = path.relative_to(SRC)
        if rel.parts[0] == "testing":
            continue
        bad = {n for n in imports(path) if n.startswith("goniec.testing")}
        assert not bad, f"{rel} imports test helpers {bad}"
