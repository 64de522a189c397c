"""One name, one meaning: the shared error, setting and tables that core and plugins reuse."""

from __future__ import annotations

import pytest

from tilefuse import config
from tilefuse.errors import TilefuseError, Unsupported


def test_unsupported_is_a_tilefuse_error():
    assert issubclass(Unsupported, TilefuseError)


@pytest.mark.parametrize(
    "module", ["tilefuse.frontend.lowering", "tilefuse_triton.gemm", "tilefuse_cuda.problem"]
)
def test_every_unsupported_is_the_one_in_errors(module):
    assert pytest.importorskip(module).Unsupported is Unsupported


INTERPRET_VALUES = ["1", "0", "", "true", "TRUE", "on", "yes", "y", "2", "off", "false", " 1"]


@pytest.mark.parametrize("value", INTERPRET_VALUES)
def test_triton_interpreted_agrees_with_triton(monkeypatch, value):
    knobs = pytest.importorskip("triton.knobs")
    monkeypatch.setenv("TRITON_INTERPRET", value)
    assert config.triton_interpreted() is bool(knobs.runtime.interpret)


def test_triton_interpreted_unset_is_off(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not config.triton_interpreted()
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert config.triton_interpreted()
