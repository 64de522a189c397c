"""The Triton backend's ``KernelScheduling``: fusion answers and kernel generation."""

from __future__ import annotations

import logging
from typing import Any

import sympy
import torch

from tilefuse import plugin

from . import heuristics
from .cpp_launch import empty_launch, render_cpp_launch
from .kernel_writer import render_spec
from .launcher import _SCRATCH_FIELDS, CubinLauncher, unsupported_reason
from .row_variants import RowVariantKernel
from .shared_compiles import compile_key, shared_compiles

MAX_KERNEL_NODES = 40
MAX_BLOCK_ELEMENTS = 1 << 20  # Triton's limit on the elements of one block
# Cubin launchers kept per kernel with symbolic sizes: Triton compiles one cubin per
# integer specialization of its size arguments (== 1, divisible by 16), so sizes that
# differ there need their own; beyond these, Triton's own launch path runs the call.
MAX_SYMBOLIC_LAUNCHERS = 4
# Straight-line launch entries kept per kernel with symbolic sizes, one per size launched:
# a call of a size seen lately skips the extents, the grid and the launcher's checks.
MAX_SIZED_ENTRIES = 8
# stats() counters: kernel launches that needed a specialization the build had not made;
# kernels that launched through Triton's own path (no cubin launcher served a call)
CALL_SPECIALIZATIONS = "triton_call_specializations"
OWN_LAUNCH_KERNELS = "triton_own_launch_kernels"
log = logging.getLogger("tilefuse")


class TritonKernel:
    """A generated Triton kernel, launched as ``kernel(*tensors)`` on the current stream.

    On a CUDA GPU the first call compiles through Triton's JIT without launching, then
    every call goes through a ``CubinLauncher`` (no per-call JIT dispatch, no C launcher
    build); where that launcher cannot serve the kernel or a call's specialization
    differs from the first's, Triton's own launch path runs it.

    A kernel of a symbolic spec takes the values of ``size_args`` after its tensors
    (``kernel(*tensors, *sizes)``) and computes its extents and grid from them per call:
    one source (and one cache entry) serves every size. It keeps up to
    ``MAX_SYMBOLIC_LAUNCHERS`` launchers, one per specialization its calls had, and for
    up to ``MAX_SIZED_ENTRIES`` sizes (the first kept dropped first) a straight-line entry
    (``CubinLauncher.static_entry``) that a call of the same sizes takes directly.
    """

    def __init__(self, spec: plugin.KernelSpec, source: str, arg_names: list[str],
                 config: dict[str, Any], cache_salt: str = "",
                 size_args: list[str] | None = None) -> None:  # fmt: skip
        self.name = spec.name
        self.arg_dtypes = [spec.buffers[a].dtype for a in arg_names]
        self.device = torch.device(spec.device)
        self.source = source
        self.arg_names = arg_names
        self.size_args = list(size_args or [])
        self.config = config
        self.kind = spec.kind
        if self.size_args:
            self._extents = plugin.size_function([spec.xnumel, spec.rnumel], self.size_args)
            self._hint_sizes = tuple(spec.hint(_symbol(spec, name)) for name in self.size_args)
            self.xnumel, self.rnumel = self._extents(*self._hint_sizes)
        else:
            self._hint_sizes = ()
            self.xnumel = int(spec.xnumel)
            self.rnumel = int(spec.rnumel)
        self.grid = (heuristics.grid_size(spec.kind, self.xnumel, self.rnumel, config),)
        self.path = plugin.store_source("triton", source, cache_salt)
        self._fn: Any = None
        self._launchers: list[CubinLauncher] = []
        # Launchers still to try making: one for static sizes; a few for symbolic ones.
        self._launcher_budget = MAX_SYMBOLIC_LAUNCHERS if self.size_args else 1
        self._compiled: Any = None  # what build() compiled (a CUDA GPU only)
        self._own_launch_counted = False
        # Static sizes: the first launcher's straight-line entry (``static_entry``).
        self._entry: Any = None
        # Symbolic sizes: sizes -> an entry for them, or None where none fits (oldest first)
        self._sized_entries: dict[tuple[Any, ...], Any] = {}

    def load(self) -> None:
        if self._fn is None:
            self._fn = getattr(plugin.load_module(self.path), self.name)

    def build(self) -> None:
        """Compile now, for the specialization a call with fresh (aligned) buffers has;
        raises what Triton raises when the kernel cannot be built. Under the interpreter
        (or on a CPU tensor) there is nothing to compile: only the module is loaded."""
        self.load()
        if plugin.triton_interpreted() or self.device.type != "cuda" or self.grid[0] == 0:
            return
        # Builds run in worker threads, whose current device is device 0: compile and load
        # the cubin on this kernel's device (a rank of a multi-GPU job uses another one).
        with torch.cuda.device(self.device):
            args = tuple(torch.empty(1, dtype=d, device=self.device) for d in self.arg_dtypes)
            values = (*args, self.xnumel, self.rnumel, *self._hint_sizes,
                      self.config["XBLOCK"], self.config["RBLOCK"])  # fmt: skip
            key = compile_key(self.source, _specialization(values), self.config,
                              device=self.device)  # fmt: skip
            with shared_compiles(key):
                compiled = self._warmup((*args, self.xnumel, self.rnumel, *self._hint_sizes),
                                        self.grid)  # fmt: skip
            self._add_launcher(compiled, values)
            self._compiled = compiled

    def cpp_launch(self) -> plugin.CppLaunch | None:
        """The C++ launch of the built cubin (``plugin.CppLaunch``), or ``None`` where there
        is none: under the interpreter or on a CPU tensor (nothing compiled), or a kernel
        ``CubinLauncher`` cannot serve (``launcher.unsupported_reason``)."""
        if self.size_args:
            return None  # its extents and grid are computed per call, in Python
        if self.grid[0] == 0:
            return empty_launch(len(self.arg_names))
        compiled = self._compiled
        if compiled is None or not self._launchers or unsupported_reason(compiled):
            return None
        metadata = compiled.metadata
        values = (*([None] * len(self.arg_names)), self.xnumel, self.rnumel,
                  self.config["XBLOCK"], self.config["RBLOCK"])  # fmt: skip
        return render_cpp_launch(
            kernel_name=metadata.name,
            cubin=compiled.asm["cubin"],
            signature=list(compiled.src.signature.values()),
            values=values,
            num_tensors=len(self.arg_names),
            grid=self.grid[0],
            num_warps=int(metadata.num_warps),
            shared=int(metadata.shared),
            device=self._launchers[0].device,
            scratch_params=sum(hasattr(metadata, f) for f in _SCRATCH_FIELDS),
        )

    def _warmup(self, scalars: tuple[Any, ...], grid: tuple[int, ...]) -> Any:
        """Compile for ``scalars`` (tensors, extents, sizes) without launching."""
        return self._fn.warmup(
            *scalars, grid=grid,
            XBLOCK=self.config["XBLOCK"], RBLOCK=self.config["RBLOCK"],
            num_warps=self.config["num_warps"],
        )  # fmt: skip

    def __call__(self, *args: Any) -> None:
        entry = self._entry
        if entry is not None and entry(*args):
            return
        if self.size_args:
            n = len(self.arg_names)
            sizes = args[n:]
            entry = self._sized_entries.get(sizes)
            if entry is not None and entry(*args[:n]):
                return
            xnumel, rnumel = self._extents(*sizes)
            grid = (heuristics.grid_size(self.kind, xnumel, rnumel, self.config),)
            positional = (*args[:n], xnumel, rnumel, *sizes)
        else:
            grid = self.grid
            positional = (*args, self.xnumel, self.rnumel)
        if grid[0] == 0:
            return
        values = (*positional, self.config["XBLOCK"], self.config["RBLOCK"])
        for launcher in self._launchers:
            if launcher(grid, _raw_stream(args), values):
                if self.size_args:
                    self._remember_entry(args[len(self.arg_names) :], launcher, values, grid)
                return
        if self._fn is None:
            self.load()
        if self._launcher_budget > 0 and self._make_launcher(positional, values, grid):
            return
        if not self._own_launch_counted:  # once per kernel: not a cost on every call
            self._own_launch_counted = True
            plugin.bump_counter(OWN_LAUNCH_KERNELS)
        self._fn[grid](
            *positional,
            XBLOCK=self.config["XBLOCK"], RBLOCK=self.config["RBLOCK"],
            num_warps=self.config["num_warps"],
        )  # fmt: skip

    def _remember_entry(
        self, sizes: tuple[Any, ...], launcher: CubinLauncher, values: tuple[Any, ...],
        grid: tuple[int, ...],
    ) -> None:  # fmt: skip
        """Keep ``launcher``'s entry for calls of ``sizes`` (which launched with ``values``
        on ``grid``), dropping the first kept size's beyond ``MAX_SIZED_ENTRIES``. The
        table is replaced, never changed in place, so calls on other threads read it
        without a lock (two racing writers may lose one entry: a cache miss, no more)."""
        if sizes in self._sized_entries or MAX_SIZED_ENTRIES <= 0:
            return  # a kept entry refused this call (alignment, device): keep it for others
        entries = dict(self._sized_entries)
        if len(entries) >= MAX_SIZED_ENTRIES:
            del entries[next(iter(entries))]
        entries[sizes] = launcher.static_entry(values, grid, _current_raw_stream)
        self._sized_entries = entries

    def _make_launcher(
        self, positional: tuple[Any, ...], values: tuple[Any, ...], grid: tuple[int, ...]
    ) -> bool:
        """Compile without launching and launch through a ``CubinLauncher``; ``False`` when
        this kernel is not one it can serve (the interpreter, a CPU tensor, ROCm...)."""
        first = positional[0] if positional else None
        if (
            plugin.triton_interpreted()
            or not hasattr(self._fn, "warmup")
            or getattr(first, "device", None) is None
            or first.device.type != "cuda"
        ):
            self._launcher_budget = 0
            return False
        key = compile_key(self.source, _specialization(values), self.config, device=first.device)
        # a call whose specialization the graph's build did not have: compiled (or taken
        # from Triton's caches) now, on the calling thread
        plugin.bump_counter(CALL_SPECIALIZATIONS)
        with shared_compiles(key):
            compiled = self._warmup(positional, grid)
        launcher = self._add_launcher(compiled, values)
        return launcher is not None and launcher(grid, _raw_stream(positional), values)

    def _add_launcher(self, compiled: Any, values: tuple[Any, ...]) -> CubinLauncher | None:
        """A launcher for ``compiled`` as called with ``values``, kept for later calls;
        ``None`` (and no more attempts) when it cannot have one."""
        self._launcher_budget -= 1
        launcher = CubinLauncher.create(compiled, values)
        if launcher is None:
            self._launcher_budget = 0
            return None
        self._launchers.append(launcher)
        if not self.size_args and self._entry is None and self.grid[0] > 0:
            self._entry = launcher.static_entry(values, self.grid, _current_raw_stream)
        return launcher


def _specialization(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """What Triton specializes a compile on, of a call's arguments: each tensor's dtype and
    16-byte alignment, every other value itself (never a tensor's contents)."""
    return tuple((v.dtype, v.data_ptr() % 16 == 0) if isinstance(v, torch.Tensor) else v
                 for v in values)  # fmt: skip


def _raw_stream(args: tuple[Any, ...]) -> int:
    """The current CUDA stream's handle on the device of the first tensor argument."""
    return _current_raw_stream(args[0].get_device())


try:  # what Triton's own CUDA driver uses: no Stream object per call
    from torch._C import _cuda_getCurrentRawStream as _current_raw_stream
except ImportError:  # a torch without CUDA support: only the interpreter runs there

    def _current_raw_stream(device: int) -> int:
        return torch.cuda.current_stream(device).cuda_stream


class TritonScheduling:
    """One per compiled graph and device (``plugin.KernelScheduling``)."""

    def __init__(self, context: plugin.CompileContext) -> None:
        self.context = context

    def can_fuse_vertical(
        self, producer: plugin.FusionQuery, consumer: plugin.FusionQuery
    ) -> plugin.Verdict:
        return self._size_ok(producer)

    def can_fuse_horizontal(self, a: plugin.FusionQuery, b: plugin.FusionQuery) -> plugin.Verdict:
        return self._size_ok(a)

    def _size_ok(self, group: plugin.FusionQuery) -> plugin.Verdict:
        if len(group.names) >= MAX_KERNEL_NODES:
            return plugin.Verdict.no(f"a Triton kernel holds at most {MAX_KERNEL_NODES} nodes")
        return plugin.Verdict.yes()

    def codegen(self, spec: plugin.KernelSpec) -> TritonKernel | RowVariantKernel:
        if spec.symbolic and heuristics.row_variants(spec):

            def render(row_length: int | None) -> TritonKernel:
                return self._kernel(spec, self._config(spec, row_length))

            return RowVariantKernel(spec, render, spec.hint(spec.rnumel))
        return self._kernel(spec, self._config(spec))

    def _kernel(self, spec: plugin.KernelSpec, config: dict[str, Any]) -> TritonKernel:
        source, args, size_args = render_spec(spec, config)
        return TritonKernel(spec, source, args, config, self.context.cache_salt(), size_args)

    def _config(self, spec: plugin.KernelSpec, row_length: int | None = None) -> dict[str, Any]:
        """The heuristics' config (``row_length``: see ``heuristics.choose_config``), with
        the scheduling policy's tiling over it where that fits in one block."""
        config = heuristics.choose_config(spec, row_length)
        policy = self.context.policy
        if policy is not None:
            override = policy.tiling(spec, self.context.device)
            if override:
                merged = {**config, **override}
                if merged["XBLOCK"] * merged["RBLOCK"] > MAX_BLOCK_ELEMENTS:
                    log.warning(
                        "tilefuse: policy %s: tiling %s with this kernel's other block "
                        "(%s) exceeds Triton's %d elements per block; using the backend's",
                        getattr(policy, "name", policy), override, config, MAX_BLOCK_ELEMENTS,
                    )  # fmt: skip
                else:
                    config = merged
                    # pairing assumed the heuristic's square tile grid: new tiles void it
                    tiles_changed = {"XBLOCK", "RBLOCK"} & set(override)
                    config["paired"] = config.get("paired") and not tiles_changed
        if config.get("persistent") and not _covers(spec, config["RBLOCK"], row_length):
            config["persistent"] = False  # one block per row must hold the whole row
        return config


def _covers(spec: plugin.KernelSpec, rblock: int, row_length: int | None) -> bool:
    """Whether a block of ``rblock`` holds every row a kernel for ``row_length`` (or,
    without it, for ``spec``'s own row length: unknown where symbolic) reduces."""
    if row_length is not None:
        return rblock >= row_length
    rnumel = sympy.sympify(spec.rnumel)
    return bool(rnumel.is_Integer) and rblock >= int(rnumel)


def _symbol(spec: plugin.KernelSpec, name: str) -> Any:
    """The size symbol called ``name`` among ``spec``'s hints."""
    for sym in spec.size_hints:
        if sym.name == name:
            return sym
    raise KeyError(f"{spec.name}: no size hint for {name}")


__all__ = ["TritonKernel", "TritonScheduling", "torch"]
