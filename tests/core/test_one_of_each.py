"""One name, one meaning: the shared error, setting and tables that core and plugins reuse."""

from __future__ import annotations

import pytest

from tilefuse.errors import TilefuseError, Unsupported


def test_unsupported_is_a_tilefuse_error():
    assert issubclass(Unsupported, TilefuseError)


@pytest.mark.parametrize(
    "module", ["tilefuse.frontend.lowering", "tilefuse_triton.gemm", "tilefuse_cuda.problem"]
)
def test_every_unsupported_is_the_one_in_errors(module):
    assert pytest.importorskip(module).Unsupported is Unsupported
