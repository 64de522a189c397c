"""Kernels are cached on disk by content: shared across processes, corrupt entries rewritten."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import torch
fn = torch.compile(lambda x: torch.softmax(x * 2, -1), backend="tilefuse")
x = torch.randn(3, 11)
torch.testing.assert_close(fn(x), torch.softmax(x * 2, -1))
"""


def run(cache: Path) -> None:
    env = dict(os.environ, TILEFUSE_CACHE_DIR=str(cache), TILEFUSE_STRICT="1")
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, cwd=Path(__file__).parents[2])  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def kernel_files(cache: Path) -> list[Path]:
    return sorted((cache / "triton").rglob("*.py"))


def test_second_process_reuses_cached_kernels(tmp_path):
    run(tmp_path)
    files = kernel_files(tmp_path)
    assert files
    stamps = {p: p.stat().st_mtime_ns for p in files}
    run(tmp_path)
    assert kernel_files(tmp_path) == files
    assert {p: p.stat().st_mtime_ns for p in files} == stamps


def test_corrupt_entry_is_recompiled_not_fatal(tmp_path):
    run(tmp_path)
    victim = kernel_files(tmp_path)[0]
    victim.write_text("this is not python (")
    run(tmp_path)
    assert "@triton.jit" in victim.read_text()
