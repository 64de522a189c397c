"""torch.compile's ``mode=`` and ``options=``, and boolean settings from the environment."""

from __future__ import annotations

import logging

import pytest
import torch

import tilefuse
from tilefuse import config
from tilefuse.compile_options import parse
from tilefuse.errors import TilefuseError


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "y", "on", " On "])
def test_strict_truthy_values(monkeypatch, raw):
    monkeypatch.setenv("TILEFUSE_STRICT", raw)
    assert config.strict() is True


@pytest.mark.parametrize("raw", ["", "0", "false", "no", "off", "OFF"])
def test_strict_falsy_values(monkeypatch, raw):
    monkeypatch.setenv("TILEFUSE_STRICT", raw)
    assert config.strict() is False


def test_strict_rejects_other_values_by_name(monkeypatch):
    monkeypatch.setenv("TILEFUSE_STRICT", "maybe")
    with pytest.raises(TilefuseError, match="TILEFUSE_STRICT='maybe'"):
        config.strict()


def test_options_override_the_environment_while_compiling(monkeypatch):
    monkeypatch.setenv("TILEFUSE_STRICT", "0")
    monkeypatch.setenv("TILEFUSE_AUTOTUNE", "default")
    with config.overrides(parse("max-autotune", None)):
        assert config.autotune_mode() == "max"
    with config.overrides(parse(None, {"strict": True, "autotune": "off"})):
        assert config.strict() is True and config.autotune_mode() == "off"
    assert config.strict() is False and config.autotune_mode() == "default"


@pytest.mark.parametrize(
    "mode, options, message",
    [
        ("fastest", None, "fastest.. is not a mode tilefuse knows"),
        (None, {"cpp_wraper": True}, "'cpp_wraper'.*not a tilefuse option.*known options"),
        (None, {"strict": "yes"}, "'strict'='yes' is invalid"),
        (None, {"autotune": "fast"}, "'autotune'='fast' is invalid"),
    ],
)
def test_bad_mode_or_option_is_a_clear_error(mode, options, message):
    with pytest.raises(TilefuseError, match=message):
        parse(mode, options)


def test_malformed_strict_setting_is_one_clear_error_before_compiling(monkeypatch):
    monkeypatch.setenv("TILEFUSE_STRICT", "2")
    torch._dynamo.reset()
    with pytest.raises(Exception, match="TILEFUSE_STRICT='2' is not a boolean"):
        torch.compile(lambda x: x.sin() + 1, backend="tilefuse")(torch.randn(4))
    torch._dynamo.reset()


def test_torch_compile_accepts_mode_and_rejects_unknown_options(caplog):
    torch._dynamo.reset()
    tilefuse.reset()  # the mode warning is shown once per process until a reset
    x = torch.randn(5)
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        out = torch.compile(lambda x: x + 1, backend="tilefuse", mode="reduce-overhead")(x)
    torch.testing.assert_close(out, x + 1)
    # A CPU graph cannot be a CUDA graph: it runs without one and says why.
    assert "reduce-overhead" in caplog.text and "cpu tensor input" in caplog.text
    torch._dynamo.reset()
    with pytest.raises(Exception, match="not a tilefuse option"):
        torch.compile(lambda x: x + 2, backend="tilefuse", options={"bogus": 1})(x)
    torch._dynamo.reset()
    tilefuse.reset()
