"""Kernels of one graph: which backend's scheduling renders each, and building them all.

``Schedulings`` holds one ``plugin.KernelScheduling`` per device and backend, created on
first use, and sends each kernel to the owner of the capability it needs
(``capability_of``; ownership is resolved by ``tilefuse.backend_selection``).
``build_kernels`` builds every kernel of a graph when the graph is compiled.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch._subclasses.fake_tensor import unset_fake_temporarily

from .. import plugin
from ..backend_selection import load_owner, plugin_versions
from ..errors import CompileError
from ..scheduler.kernel_specs import fusion_query


def capability_of(*parts: Any) -> str:
    """The capability a kernel made of ``parts`` (fused groups or scheduler nodes) needs:
    ``CAP_REDUCTION`` when any of them reduces, else ``CAP_POINTWISE``."""
    for part in parts:
        if getattr(part, "reduction", False) is True or getattr(part, "kind", None) == "reduction":
            return plugin.CAP_REDUCTION
    return plugin.CAP_POINTWISE


class Schedulings:
    """One scheduling per device and backend, created on first use; each kernel goes to
    the owner of the capability it needs (``backend_selection``).

    ``policy`` is the active (checked) scheduling policy or ``None``; each scheduling is
    created with a ``plugin.CompileContext`` carrying it.
    """

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.instances: dict[tuple[str, str], tuple[str, Any]] = {}
        self.owners: dict[tuple[str, str], tuple[str, Any]] = {}

    def _instance(self, device: torch.device, backend: Any, factory: Any) -> tuple[str, Any]:
        key = (str(device), backend.info.name)
        if key not in self.instances:
            context = plugin.CompileContext(
                device=str(device),
                policy=self.policy,
                plugin_versions=plugin_versions(backend, self.policy),
            )
            self.instances[key] = (backend.info.name, factory(context))
        return self.instances[key]

    def for_device(
        self, device: torch.device, capability: str = plugin.CAP_POINTWISE
    ) -> tuple[str, Any]:
        """``(backend name, scheduling)`` of the owner of ``capability`` on ``device``.

        Raises ``NoBackendError`` when no usable backend declares it there.
        """
        key = (str(device), capability)
        if key not in self.owners:
            backend, factory = load_owner(device.type, capability)
            self.owners[key] = self._instance(device, backend, factory)
        return self.owners[key]

    def can_fuse(self, kind: str, group: Any, node: Any) -> plugin.Verdict:
        """The owning backend's answer to fusing ``node`` into ``group`` (``kind`` is
        ``"vertical"`` or ``"horizontal"``): the scheduler's ``CanFuse``. Template
        epilogues are not asked here (``templates.accepts_epilogue``)."""
        _, scheduling = self.for_device(group.device, capability_of(group, node))
        first, second = fusion_query(group), fusion_query(node)
        if kind == "vertical":
            return scheduling.can_fuse_vertical(first, second)
        return scheduling.can_fuse_horizontal(first, second)


def build_kernels(kernels: Sequence[Any], origins_of: dict[str, list[str]]) -> None:
    """Build every kernel that has a ``build()`` now, in a thread pool sized to the machine.

    Raises ``CompileError`` naming the first failing kernel, the aten ops it came from and
    the error, so that the caller runs the graph eagerly (or raises under strict mode).
    """
    buildable = [k for k in kernels if callable(getattr(k, "build", None))]
    if not buildable:
        return
    workers = max(1, min(len(buildable), os.cpu_count() or 1, 16))
    # The graph compiles under AOTAutograd's fake-tensor mode; a build may allocate
    # real (tiny) tensors to specialize on, so it runs with that mode switched off.
    with unset_fake_temporarily():
        if workers == 1:
            results = [_try_build(k) for k in buildable]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="tilefuse-build") as pool:
                results = list(pool.map(_try_build, buildable))
    for kernel, error in zip(buildable, results):
        if error is not None:
            ops = ", ".join(origins_of.get(kernel.name, [])) or "unknown ops"
            raise CompileError(
                f"kernel {kernel.name} (from aten {ops}) failed to build: "
                f"{type(error).__name__}: {_first_line(error)}"
            ) from error


def _try_build(kernel: Any) -> BaseException | None:
    try:
        kernel.build()
    except Exception as exc:  # reported by the caller with the kernel's origins
        return exc
    return None


def _first_line(error: BaseException) -> str:
    """The error's first line, and its last when they differ: a Triton compilation
    error starts with a source position and ends with the cause."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
