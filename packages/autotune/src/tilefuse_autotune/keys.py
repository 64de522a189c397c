"""What a winners-cache key is made of: the problem, the device, the toolchain and the
active scheduling policy's uuid.

Never file names or paths: the same problem on the same machine and versions finds
the same winner wherever the cache directory lives.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import cache
from importlib import metadata
from typing import Any

from tilefuse import plugin


def _spec(s: plugin.TensorSpec) -> list[Any]:
    return [list(s.shape), list(s.stride), s.dtype]


@cache
def device_name(device: str) -> str:
    """``torch.cuda.get_device_name`` for CUDA devices, else the device type (``"cpu"``)."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return kind


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@cache
def toolchain_versions() -> dict[str, str | None]:
    """Versions of torch, triton (when importable), tilefuse-core and tilefuse-autotune."""
    import torch

    triton = _dist_version("triton") if importlib.util.find_spec("triton") else None
    return {
        "torch": torch.__version__,
        "triton": triton,
        "tilefuse-core": _dist_version("tilefuse-core"),
        "tilefuse-autotune": _dist_version("tilefuse-autotune"),
    }


def policy_uuid() -> str | None:
    """The uuid of the scheduling policy ``TILEFUSE_POLICY`` activates (checked once by
    core), or ``None``; raises ``PluginError`` when that policy is missing or broken."""
    from tilefuse.backend_selection import active_policy

    policy = active_policy()
    return policy.uuid() if policy is not None else None


def cache_key_fields(
    op: str,
    inputs: Sequence[plugin.TensorSpec],
    layout: plugin.TensorSpec,
    epilogue: plugin.Epilogue,
    candidates: Sequence[Any],
) -> dict[str, Any]:
    """The JSON-able fields of the key; ``candidates`` contribute provider names and versions.
    A float32 problem on CUDA says whether its matmuls may use TF32 (``tf32_matmuls``): its
    timings with TF32 are not the same problem's without."""
    fields: dict[str, Any] = {
        "op": op,
        "inputs": [_spec(s) for s in inputs],
        "layout": _spec(layout),
        "epilogue": epilogue.key(),
        "device": device_name(layout.device),
        "versions": toolchain_versions(),
        "policy": policy_uuid(),
        "providers": sorted({f"{c.provider}=={c.version}" for c in candidates}),
    }
    if layout.dtype == "float32" and layout.device.startswith("cuda"):
        fields["tf32"] = plugin.tf32_matmuls()  # other dtypes' keys stay as they were
    return fields


def tf32_matmuls(device: str) -> bool:
    """Whether this process lets float32 matmuls on ``device`` use TF32
    (``plugin.tf32_matmuls``); ``False`` off CUDA."""
    return device.startswith("cuda") and plugin.tf32_matmuls()
