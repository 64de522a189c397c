"""The remote cache on a GPU: a second "machine" (a fresh process with empty tilefuse and
Triton caches) that shares the first's Redis compiles no Triton kernel, and its results
equal eager's. Needs a CUDA GPU and ``redis-server`` (skipped, with the reason, otherwise).
Run with ``pytest -m gpu tests/e2e/test_gpu_remote_cache.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

PROGRAM = Path(__file__).with_name("gpu_remote_program.py")


def _machine(tmp_path: Path, name: str, url: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TILEFUSE_", "TRITON_"))}  # fmt: skip
    env.update(TILEFUSE_CACHE_DIR=str(tmp_path / name / "tilefuse"),
               TRITON_CACHE_DIR=str(tmp_path / name / "triton"),
               TILEFUSE_REMOTE_CACHE=url, TILEFUSE_STRICT="1")  # fmt: skip
    done = subprocess.run([sys.executable, str(PROGRAM)], env=env, capture_output=True,
                          text=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_machine_compiles_no_triton_kernel(redis_url, tmp_path):
    first = _machine(tmp_path, "first", redis_url)
    assert (first["graphs_compiled"], first["graphs_fallen_back"]) == (2, 0), first
    assert first["triton_compiles"] >= 2 and first["remote_stores"] >= 2, first
    second = _machine(tmp_path, "second", redis_url)
    assert (second["graphs_compiled"], second["graphs_fallen_back"]) == (2, 0), second
    assert second.get("triton_compiles", 0) == 0, second
    assert second["remote_hits"] >= first["triton_compiles"], (first, second)
    assert second["remote_rejected"] == second["remote_errors"] == 0, second
