"""``PROVIDER``: the ``tilefuse.autotune.choices`` entry point offering ROCm GEMM kernels.

Importing this module is cheap (no torch, no toolkit): torch is imported inside
``supports`` and at run time only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from tilefuse import plugin

from . import toolchain
from .gemm_spec import (
    MFMA_ARCHS,
    MFMA_CONFIGS,
    OPS,
    SIMT_CONFIGS,
    GemmConfig,
    GemmProblem,
    problem_from_specs,
)

__version__ = "0.1.0"


class RocmGemmChoice:
    """One ROCm GEMM candidate: ``problem`` tiled by ``config``, built for ``arch``.

    Picklable: it holds only frozen dataclasses and strings; the loaded library is dropped
    when pickled and reloaded from the disk cache on first ``run`` in another process.
    """

    def __init__(self, problem: GemmProblem, config: GemmConfig, arch: str) -> None:
        self.problem = problem
        self.config = config
        self.arch = arch
        self.name = f"rocm_{config.name()}"
        self._so_path: Path | None = None
        self._kernel: Any = None

    def __repr__(self) -> str:
        return f"RocmGemmChoice({self.name}, {self.problem.key()}, arch={self.arch})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_kernel"] = None
        return state

    def source(self) -> str:
        """The kernel's HIP C++ text."""
        from .render import render_gemm

        return render_gemm(self.problem, self.config)

    def compile(self) -> None:
        """Build (or find in the disk cache) the shared object; ``ChoiceFailed`` on error."""
        if self._so_path is not None and self._so_path.is_file():
            return
        from .compiler import compile_source

        self._so_path = compile_source(self.source(), self.arch, self.name)

    def run(self, *inputs: Any, out: Any) -> None:
        """Launch on the current stream: ``inputs`` are the op's tensors then the epilogue's
        operands (``tilefuse.plugin.Choice`` conventions); writes ``out``."""
        import torch

        from .launcher import load, pack_arguments

        if self._kernel is None:
            self.compile()
            assert self._so_path is not None
            self._kernel = load(self._so_path)
        packed = pack_arguments(self.problem, inputs, out)
        stream = torch.cuda.current_stream(out.device).cuda_stream
        self._kernel.launch(packed, int(stream))


def _template_digest() -> str:
    text = resources.files("tilefuse_rocm").joinpath("templates/gemm.hip.j2").read_bytes()
    return hashlib.sha256(text).hexdigest()[:8]


class RocmChoiceProvider:
    """Offers SIMT tilings everywhere and MFMA tilings on gfx90a/gfx94x."""

    name = "rocm"
    api_version = plugin.API_VERSION

    def __init__(self) -> None:
        # The template text enters the version so winners recorded with an older template
        # are not replayed.
        self.version = f"{__version__}+{_template_digest()}"

    def supports(self, op: str, device: str) -> bool:
        """True only for a GEMM op on a ROCm torch with a device and hipcc; never raises."""
        try:
            if op not in OPS or not str(device).startswith("cuda"):
                return False
            if toolchain.find_hipcc() is None:
                return False
            import torch

            return getattr(torch.version, "hip", None) is not None and torch.cuda.is_available()
        except Exception:
            return False

    def configs(self, problem: GemmProblem, arch: str) -> list[GemmConfig]:
        """The tilings offered for ``problem`` on ``arch``."""
        configs = list(SIMT_CONFIGS)
        if toolchain.base_arch(arch) in MFMA_ARCHS:
            configs += MFMA_CONFIGS
        return [c for c in configs if c.check(problem)]

    def accepts(
        self,
        op: str,
        inputs: Sequence[plugin.TensorSpec],
        layout: plugin.TensorSpec,
        epilogue: plugin.Epilogue,
    ) -> plugin.Verdict:
        """Whether the HIP template renders this problem with ``epilogue`` fused, and why
        not (``plugin.ChoiceProvider.accepts``); never raises."""
        problem = problem_from_specs(op, inputs, layout, epilogue)
        return problem if isinstance(problem, plugin.Verdict) else plugin.Verdict.yes()

    def choices(
        self,
        op: str,
        inputs: Sequence[plugin.TensorSpec],
        layout: plugin.TensorSpec,
        epilogue: plugin.Epilogue,
    ) -> Iterable[RocmGemmChoice]:
        """Candidates for the problem (none when it or its epilogue cannot be rendered)."""
        problem = problem_from_specs(op, inputs, layout, epilogue)
        if isinstance(problem, plugin.Verdict):
            return []
        arch = toolchain.target_arch()
        return [RocmGemmChoice(problem, c, arch) for c in self.configs(problem, arch)]


PROVIDER = RocmChoiceProvider()
