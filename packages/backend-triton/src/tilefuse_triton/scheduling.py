"""The Triton backend's ``KernelScheduling``: fusion answers and kernel generation."""

from __future__ import annotations

from typing import Any

import torch

from tilefuse import plugin
from tilefuse.codegen.kernel_cache import load_module, store_source
from tilefuse.scheduler.group import FusedGroup

from . import heuristics
from .kernel_writer import render_group

MAX_KERNEL_NODES = 40


class TritonKernel:
    """A generated Triton kernel, launched as ``kernel(*tensors)`` on the current stream."""

    def __init__(self, name: str, source: str, arg_names: list[str], group: FusedGroup,
                 config: dict[str, Any]) -> None:  # fmt: skip
        self.name = name
        self.source = source
        self.arg_names = arg_names
        self.config = config
        self.xnumel = int(group.xnumel)
        self.rnumel = int(group.rnumel)
        self.grid = (heuristics.grid(group, config),)
        self.path = store_source("triton", source)
        self._fn: Any = None

    def load(self) -> None:
        if self._fn is None:
            self._fn = getattr(load_module(self.path), self.name)

    def __call__(self, *args: Any) -> None:
        if self.grid[0] == 0:
            return
        if self._fn is None:
            self.load()
        self._fn[self.grid](
            *args, self.xnumel, self.rnumel,
            XBLOCK=self.config["XBLOCK"], RBLOCK=self.config["RBLOCK"],
            num_warps=self.config["num_warps"],
        )  # fmt: skip


class TritonScheduling:
    """One per compiled graph and device (``plugin.KernelScheduling``)."""

    def __init__(self, context: plugin.CompileContext) -> None:
        self.context = context
        self.buffers: dict[str, Any] = context.options.get("buffers", {})
        self.counter = 0

    def can_fuse_vertical(self, producer: Any, consumer: Any) -> plugin.Verdict:
        return self._size_ok(producer)

    def can_fuse_horizontal(self, a: Any, b: Any) -> plugin.Verdict:
        return self._size_ok(a)

    def _size_ok(self, group: Any) -> plugin.Verdict:
        if len(getattr(group, "nodes", ())) >= MAX_KERNEL_NODES:
            return plugin.Verdict.no(f"a Triton kernel holds at most {MAX_KERNEL_NODES} nodes")
        return plugin.Verdict.yes()

    def codegen(self, group: FusedGroup) -> TritonKernel:
        self.counter += 1
        name = f"tf_{group.kind().replace('-', '_')}_{self.counter}"
        config = heuristics.choose_config(group)
        policy = self.context.policy
        if policy is not None:
            override = policy.tiling(group, self.context.device)
            if override:
                config.update(override)
        source, args = render_group(group, self.buffers, name, config)
        return TritonKernel(name, source, args, group, config)

    def codegen_template(self, template: Any, epilogue: Any) -> TritonKernel:
        raise NotImplementedError("GEMM templates are selected through tilefuse-autotune")


__all__ = ["TritonKernel", "TritonScheduling", "torch"]
