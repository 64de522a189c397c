"""Core with no backend installed: it imports, lists none, and compiling says so clearly."""

from __future__ import annotations

import logging

import pytest
import torch

from tilefuse import plugin
from tilefuse.discovery import reset_registry
from tilefuse.errors import NoBackendError

pytestmark = pytest.mark.skipif(
    bool(reset_registry().records(plugin.BACKENDS_GROUP)),
    reason="backends are installed here; `nox -s core-alone` runs this without any",
)


def test_no_backends_listed():
    assert reset_registry().records(plugin.BACKENDS_GROUP) == []


def test_compile_runs_eagerly_and_says_no_backend(caplog, monkeypatch):
    monkeypatch.delenv("TILEFUSE_STRICT", raising=False)
    torch._dynamo.reset()
    fn = torch.compile(lambda x: torch.relu(x) + 1, backend="tilefuse")
    x = torch.randn(8)
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        out = fn(x)
    torch.testing.assert_close(out, torch.relu(x) + 1)
    assert "no backend for device 'cpu'" in caplog.text
    assert "no backend plugins are installed" in caplog.text


def test_strict_mode_raises_no_backend_error(monkeypatch):
    monkeypatch.setenv("TILEFUSE_STRICT", "1")
    torch._dynamo.reset()
    fn = torch.compile(lambda x: x * 2, backend="tilefuse")
    with pytest.raises(Exception) as info:
        fn(torch.randn(4))
    text = str(info.value)
    assert "no backend for device 'cpu'" in text
    # Dynamo re-raises backend errors as BackendCompilerFailed naming the original type.
    assert NoBackendError.__name__ in text
