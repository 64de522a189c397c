"""Data flows one way through core: no module imports from a later stage.

Every module of ``packages/core/src/tilefuse`` is parsed (imports inside functions count:
a lazy import is still a dependency) and placed in a stage; each stage may import only
the stages listed for it. A new module must be placed here before this test passes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "packages" / "core" / "src" / "tilefuse"

# Shared infrastructure: the plugin contract, settings, errors, counters, discovery and
# ownership. Any stage may import it; it imports no stage but the IR (the contract's
# index algebra).
SHARED = {
    "plugin",
    "kernel_spec",
    "gemm_shape",
    "extern_gemm",
    "errors",
    "config",
    "counters",
    "discovery",
    "backend_selection",
    "policy_check",
    "remote_cache",
    "lru",
}

# Stage -> the stages it may import (besides itself and SHARED). The scheduler and
# codegen read the IR the frontend produced, never the frontend itself.
ALLOWED = {
    "shared": {"ir"},
    "ir": set(),
    "frontend": {"ir"},
    "scheduler": {"ir"},
    "codegen": {"ir", "scheduler"},
    "pipeline": {"ir", "frontend", "scheduler", "codegen"},
    "entry": {"ir", "frontend", "scheduler", "codegen", "pipeline"},
}

# Top-level modules and packages that are not shared, by stage.
STAGE_OF = {
    "ir": "ir",
    "frontend": "frontend",
    "scheduler": "scheduler",
    "codegen": "codegen",
    "pipeline": "pipeline",
    "report": "pipeline",
    "dynamo_backend": "entry",
    "cuda_graphs": "entry",
    "compile_options": "entry",
    "explainer": "entry",
    "cli": "entry",
    "testing": "entry",
    "__init__": "entry",
    "__main__": "entry",
}


def stage(module: str) -> str:
    """The stage of ``module`` (a dotted name under ``tilefuse``, or ``tilefuse`` itself)."""
    parts = module.split(".")
    assert parts[0] == "tilefuse", module
    top = parts[1] if len(parts) > 1 else "__init__"
    if top in SHARED:
        return "shared"
    if top not in STAGE_OF:
        raise AssertionError(
            f"tilefuse.{top} is in no stage: add it to SHARED or STAGE_OF in {__file__}"
        )
    return STAGE_OF[top]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def is_module(dotted: str, root: Path = ROOT) -> bool:
    where = root.parent / Path(*dotted.split("."))
    return where.with_suffix(".py").exists() or where.is_dir()


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """``(line, dotted module)`` of every ``tilefuse`` module ``path`` (under ``root``)
    imports."""
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("tilefuse")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "tilefuse" and not target.startswith("tilefuse."):
                continue
            # ``from . import plugin`` imports the module tilefuse.plugin.
            subs = [f"{target}.{a.name}" for a in node.names
                    if is_module(f"{target}.{a.name}", root)]  # fmt: skip
            found += [(node.lineno, m) for m in subs] or [(node.lineno, target)]
    return found


def violations(root: Path = ROOT) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        here = module_name(path, root)
        mine = stage(here)
        for line, target in imported_modules(path, root):
            theirs = stage(target)
            if theirs in (mine, "shared") or theirs in ALLOWED[mine]:
                continue
            rel = path.relative_to(root.parent)
            out.append(f"{rel}:{line}: {here} ({mine}) imports {target} ({theirs})")
    return out


def test_core_has_modules_to_check():
    assert len(list(ROOT.rglob("*.py"))) > 30


def test_no_module_imports_a_later_stage():
    found = violations()
    assert not found, "imports against the data flow:\n" + "\n".join(found)


def test_the_ir_imports_no_other_stage():
    for path in sorted((ROOT / "ir").rglob("*.py")):
        for line, target in imported_modules(path):
            assert stage(target) in ("ir", "shared"), f"{path}:{line} imports {target}"


@pytest.mark.parametrize(
    "source, module, expected",
    [
        ("from ..codegen.kernels import build_kernels\n", "scheduler/bad.py", "codegen"),
        ("from ..frontend.lowering import GraphLowering\n", "scheduler/bad.py", "frontend"),
        ("from .. import pipeline\n", "codegen/bad.py", "pipeline"),
        (
            "def f():\n    from tilefuse.dynamo_backend import tilefuse_backend\n",
            "ir/bad.py",
            "entry",
        ),
        ("from ..scheduler import Schedule\n", "ir/bad.py", "scheduler"),
    ],
)
def test_a_backward_import_is_caught(tmp_path, source, module, expected):
    """The check itself can fail: a copy of core with one backward import is reported."""
    import shutil

    copy = tmp_path / "tilefuse"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / module).write_text(source)
    found = violations(copy)
    assert len(found) == 1 and f"({expected})" in found[0], found
