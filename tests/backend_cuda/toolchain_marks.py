"""``needs_toolchain``: skip a test, saying why, where nvcc or the CUTLASS headers are missing."""

from __future__ import annotations

import pytest

from tilefuse_cuda import toolchain


def toolchain_reason() -> str | None:
    """Why CUTLASS kernels cannot be compiled here, or ``None`` when they can."""
    try:
        toolchain.find_nvcc()
        toolchain.cutlass_headers()
    except toolchain.ToolchainMissing as exc:
        return str(exc)
    return None


needs_toolchain = pytest.mark.skipif(
    toolchain_reason() is not None, reason=f"cannot compile CUTLASS: {toolchain_reason()}"
)
