"""End-to-end tests compile in strict mode, backward graphs included (AOTAutograd compiles
them lazily, after the forward call has returned)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def strict_compiles(monkeypatch):
    monkeypatch.setattr("tilefuse.config.strict", lambda: True)
    torch.manual_seed(0)
