"""``PROVIDER``: CUTLASS 3 sm_90a GEMM choices for the autotuner (``tilefuse.autotune.choices``).

Importing this module is cheap (no torch, no nvcc); rendering happens in
``Choice.compile()``, which may run in a worker process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tilefuse import plugin
from tilefuse.errors import ChoiceFailed

from . import settings
from .compiler import KIND, cache_key, compile_source
from .configs import GemmConfig, configs_for
from .problem import Dims, GemmProblem, Unsupported, analyse
from .render import kernel_name, render
from .toolchain import ToolchainMissing, cutlass_headers, sm90_device_reason

log = logging.getLogger(__name__)

__version__ = "0.1.0"
OPS = tuple(plugin.GEMM_OPS)
DEFAULT_CHOICES = 4  # per request outside max mode; max takes settings.max_candidates()


@dataclass
class CutlassGemmChoice:
    """One CUTLASS kernel for one problem class: picklable; the ``.so`` is loaded lazily.

    The built ``.so`` depends on ``problem`` and ``config`` only, never on ``dims``: sizes
    and strides are kernel arguments, so every request of the same class shares one build
    (``build_key``). ``build_deadline`` (``time.time()`` seconds, or ``None``) is when the
    request's compile budget runs out: a build that would start after it fails instead,
    unless the ``.so`` is cached.
    """

    problem: GemmProblem
    config: GemmConfig
    dims: Dims
    name: str = ""
    build_deadline: float | None = None
    # The request's layouts (the op's tensors, the epilogue's operands; the output), for
    # the C++ launch, which bakes them in; the build does not depend on them.
    inputs: tuple[plugin.TensorSpec, ...] = field(default=(), repr=False, compare=False)
    layout: plugin.TensorSpec | None = field(default=None, repr=False, compare=False)
    _lib: Any = field(default=None, repr=False, compare=False)
    slow_build = True  # an nvcc build takes tens of seconds: never taken unmeasured

    def __post_init__(self) -> None:
        if not self.name:
            self.name = kernel_name(self.problem, self.config)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_lib"] = None  # a ctypes handle does not cross processes
        return state

    def source(self) -> str:
        """The generated ``.cu`` text (raises ``ToolchainMissing`` without CUTLASS)."""
        return render(self.problem, self.config, cutlass_headers().version)

    def build_key(self) -> str:
        """The build cache key of this choice's ``.so`` (``compiler.cache_key`` of its
        source): equal keys mean one build serves both choices. Raises ``ToolchainMissing``
        without nvcc or CUTLASS."""
        return cache_key(self.source())

    def build_cached(self) -> bool:
        """Whether the ``.so`` is already in this machine's cache (cheap; never raises)."""
        try:
            return plugin.has_artifact(KIND, self.build_key(), "kernel.so")
        except Exception:
            return False

    def compile(self) -> Path:
        """Build (or find in the cache) the ``.so``; raises ``ChoiceFailed`` with the reason
        (a failed build, or a compile budget spent before this build could start)."""
        try:
            return compile_source(self.source(), self.name, deadline=self.build_deadline)
        except ToolchainMissing as exc:
            raise ChoiceFailed(f"{self.name}: {exc}") from exc

    def run(self, *inputs: Any, out: Any) -> None:
        """Launch on the current stream: ``inputs`` = the op's tensors, then the epilogue's."""
        from .launcher import launch, load_library

        if self._lib is None:
            self._lib = load_library(self.compile())
        launch(self._lib, self.problem, inputs, out)

    def cpp_launch(self) -> plugin.CppLaunch | None:
        """The C++ launch of this kernel for exactly its request's layouts
        (``plugin.CppLaunch``, see ``cpp_launch``): builds or finds the ``.so`` and loads
        it into this process (the launch only uses an already loaded library). ``None``
        for a choice made without its request's layouts."""
        from .cpp_launch import render_cutlass_launch
        from .launcher import load_library

        if self.layout is None or not self.inputs:
            return None
        path = self.compile()
        self._lib = load_library(path)
        return render_cutlass_launch(
            kernel_name=self.name,
            library=str(path),
            problem=self.problem,
            inputs=self.inputs,
            layout=self.layout,
        )


class CutlassChoiceProvider:
    """CUTLASS GEMM choices for ``mm``, ``addmm`` and ``bmm`` on sm_90 GPUs."""

    name = "cuda"
    api_version = plugin.API_VERSION

    @property
    def version(self) -> str:
        try:
            cutlass = cutlass_headers().version
        except ToolchainMissing:
            cutlass = "none"
        return f"{__version__}+cutlass{cutlass}"

    def supports(self, op: str, device: str) -> bool:
        """True for ``mm``/``addmm``/``bmm`` on an sm_90 CUDA device; never raises."""
        return op in OPS and sm90_device_reason(device) is None

    def accepts(
        self,
        op: str,
        inputs: Sequence[plugin.TensorSpec],
        layout: plugin.TensorSpec,
        epilogue: plugin.Epilogue,
    ) -> plugin.Verdict:
        """Whether a CUTLASS template serves this GEMM with ``epilogue`` fused, and why not
        (``plugin.ChoiceProvider.accepts``); never raises, builds nothing."""
        plain = plugin.Epilogue((), (), epilogue.out_dtype)
        n_op = len(inputs) - len(epilogue.operands)
        try:
            analyse(op, inputs[:n_op], layout, plain)
        except Unsupported as exc:
            return plugin.Verdict.no(f"CUTLASS does not serve this GEMM ({exc})")
        try:
            analyse(op, inputs, layout, epilogue)
        except Unsupported as exc:
            return plugin.Verdict.no(f"CUTLASS cannot render this epilogue ({exc})")
        return plugin.Verdict.yes()

    def choices(
        self,
        op: str,
        inputs: Sequence[plugin.TensorSpec],
        layout: plugin.TensorSpec,
        epilogue: plugin.Epilogue,
        limit: int | None = None,
    ) -> Iterator[CutlassGemmChoice]:
        """Candidate kernels, the heuristic pick first; nothing (reason logged) if unfit.

        ``limit`` caps the count (default: 4, or ``TILEFUSE_CUDA_MAX_CANDIDATES`` under
        ``TILEFUSE_AUTOTUNE=max``, see ``settings``). With ``TILEFUSE_CUDA_COMPILE_BUDGET_S``
        set, every choice but the first carries the deadline of its build. Raises
        ``TilefuseError`` when one of those settings is malformed.
        """
        try:
            problem, dims = analyse(op, inputs, layout, epilogue)
            cutlass_headers()
        except (Unsupported, ToolchainMissing) as exc:
            log.info("cuda: no CUTLASS choice for %s %s: %s", op, layout.shape, exc)
            return
        if limit is None:
            max_mode = plugin.autotune_mode() == "max"
            limit = settings.max_candidates() if max_mode else DEFAULT_CHOICES
        budget = settings.compile_budget_s()
        deadline = None if budget is None else time.time() + budget
        for rank, cfg in enumerate(configs_for(dims, limit)):
            # The heuristic pick is always built: a budget never leaves a request empty.
            yield CutlassGemmChoice(
                problem, cfg, dims, build_deadline=deadline if rank else None,
                inputs=tuple(inputs), layout=layout,
            )  # fmt: skip


PROVIDER = CutlassChoiceProvider()
