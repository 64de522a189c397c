"""ROCm test tiers: render (no toolkit), compile (hipcc present), run (``rocm`` marker: an AMD
GPU with a ROCm build of torch; skipped with that reason elsewhere)."""

from __future__ import annotations

import pytest


def _rocm_device() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return getattr(torch.version, "hip", None) is not None and bool(torch.cuda.is_available())


def pytest_configure(config):
    config.addinivalue_line("markers", "rocm: needs an AMD GPU and a ROCm build of torch")


def pytest_collection_modifyitems(config, items):
    if _rocm_device():
        return
    skip = pytest.mark.skip(
        reason="needs an AMD GPU with a ROCm build of torch (none in this team's machines)"
    )
    for item in items:
        if "rocm" in item.keywords:
            item.add_marker(skip)
