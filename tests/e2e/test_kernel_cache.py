"""Kernels are cached on disk by content: shared across processes, corrupt entries rewritten,
planted code never run."""

from __future__ import annotations

import importlib.util
import marshal
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


def test_non_utf8_entry_is_repaired_not_fatal(tmp_path):
    run(tmp_path)
    victim = kernel_files(tmp_path)[0]
    good = victim.read_bytes()
    victim.write_bytes(b"\xff\xfe\x80 not utf-8 " + good[:20])
    run(tmp_path)  # strict: a fallback to eager would fail the run
    assert victim.read_bytes() == good


def test_planted_bytecode_next_to_a_cached_kernel_never_runs(tmp_path):
    cache, marker = tmp_path / "cache", tmp_path / "planted_ran"
    run(cache)
    payload = f"open({str(marker)!r}, 'w').close()\n"
    for py in kernel_files(cache):
        st = py.stat()
        header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
        header += (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
        header += (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
        pyc = Path(importlib.util.cache_from_source(str(py)))
        pyc.parent.mkdir(exist_ok=True)
        pyc.write_bytes(header + marshal.dumps(compile(payload, str(py), "exec")))
    run(cache)
    assert not marker.exists()
