"""Plugins use the published surface alone: ``tilefuse.plugin`` and ``tilefuse.errors``.

Scans the source of tilefuse's own backends, the third-party example and the toy plugins
for imports of core internals (``tilefuse.scheduler``, ``codegen``, ``frontend``, ``ir`` or
any other module of core).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BACKEND_SOURCES = sorted((ROOT / "packages").glob("backend-*/src"))
PLUGIN_SOURCES = [
    *BACKEND_SOURCES,
    ROOT / "examples" / "third_party_backend" / "src",
    ROOT / "tests" / "plugins" / "toy" / "src",
]
# The check, as a regular expression over each line.
INTERNAL = re.compile(
    r"from tilefuse\.(scheduler|codegen|frontend|ir)"
    r"|import tilefuse\.(scheduler|codegen|frontend|ir)"
)
# What a plugin may import from core.
PUBLIC = {"tilefuse.plugin", "tilefuse.errors"}


def internal_lines(root: Path) -> list[str]:
    """``path:line: text`` for every line under ``root`` that imports a core internal."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if INTERNAL.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def non_public_imports(source: str) -> list[str]:
    """Modules of core, other than ``PUBLIC``, that ``source`` imports (at any depth)."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "tilefuse":
                names = [f"tilefuse.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        else:
            continue
        for name in names:
            if name.startswith("tilefuse.") and not any(
                name == p or name.startswith(p + ".") for p in PUBLIC
            ):
                bad.append(name)
    return bad


def test_the_scan_sees_backend_sources():
    names = {p.parent.name for p in BACKEND_SOURCES}
    assert {"backend-triton", "backend-cuda", "backend-rocm"} <= names
    assert all(any(p.rglob("*.py")) for p in PLUGIN_SOURCES)


def test_backends_import_no_core_internals():
    found = [line for root in BACKEND_SOURCES for line in internal_lines(root)]
    assert not found, "backends import core internals:\n" + "\n".join(found)


@pytest.mark.parametrize("root", PLUGIN_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_import_only_the_public_surface(root):
    found = []
    for path in sorted(root.rglob("*.py")):
        for name in non_public_imports(path.read_text()):
            found.append(f"{path.relative_to(ROOT)}: {name}")
    assert not found, "import only tilefuse.plugin and tilefuse.errors:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source, bad",
    [
        ("from tilefuse.scheduler.group import FusedGroup", ["tilefuse.scheduler.group"]),
        ("import tilefuse.ir.index as index", ["tilefuse.ir.index"]),
        ("from tilefuse import config, plugin", ["tilefuse.config"]),
        ("def f():\n    from tilefuse.codegen import kernel_cache", ["tilefuse.codegen"]),
        ("from tilefuse import plugin\nfrom tilefuse.errors import Unsupported", []),
        ("from tilefuse.plugin import KernelSpec\nimport tilefuse_triton.heuristics", []),
    ],
)
def test_the_scan_catches_internal_imports(source, bad):
    assert non_public_imports(source) == bad
    assert bool(INTERNAL.search(source)) == any(
        b.split(".")[1] in ("scheduler", "codegen", "frontend", "ir") for b in bad
    )
