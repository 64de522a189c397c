"""``TritonGemmChoice``: one config of the GEMM template, as an autotune candidate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tilefuse import plugin
from tilefuse.errors import CacheError, ChoiceFailed

from ..shared_compiles import compile_key, shared_compiles
from .config import GemmConfig
from .module_cache import load_module
from .template import render_gemm


@dataclass
class TritonGemmChoice:
    """A ``tilefuse.plugin.Choice`` running the Triton GEMM template with one ``GemmConfig``.

    Picklable: it holds only specs and the config; the imported kernel module is
    rebuilt by ``compile()`` in whichever process runs it. ``compile()`` writes
    and imports the rendered module and, on a CUDA device, launches it once on
    scratch tensors so that Triton's JIT compile (and its on-disk cache) happens
    there, not inside a timed run; failures raise ``ChoiceFailed`` naming the
    choice. ``run(*inputs, out=...)`` compiles on first use, then launches on
    the current stream. ``any_size``: the rendered kernel reads sizes and strides at
    launch, so it runs any problem of its dtypes, ranks and broadcast patterns that is
    no larger than its specs (``index_64`` is decided from them).
    """

    any_size = True
    thread_safe_build = True  # module loads are locked; Triton compiles on any thread
    name: str
    op: str
    config: GemmConfig
    inputs: tuple[plugin.TensorSpec, ...]
    layout: plugin.TensorSpec
    epilogue: plugin.Epilogue
    vendor_first: bool = False  # the vendor product, then the epilogue as one pass (template)
    _launch: Any = field(default=None, init=False, repr=False, compare=False)
    _source: str | None = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_launch"] = None  # a module's function does not pickle; compile() rebuilds it
        return state

    @property
    def source(self) -> str:
        """The rendered module text (what the debug directory and the cache hold)."""
        if self._source is None:
            self._source = render_gemm(
                self.op,
                self.config,
                self.epilogue,
                self.inputs,
                self.layout,
                name=self.name,
                vendor_first=self.vendor_first,
            )
        return self._source

    def compile(self) -> None:
        try:
            module = load_module(self.source, self.name)
        except CacheError:
            raise
        except Exception as error:
            raise ChoiceFailed(f"{self.name}: rendering or importing failed: {error}") from error
        if self.layout.device.startswith("cuda"):
            self._warm_up(module.launch)
        self._launch = module.launch

    def _warm_up(self, launch: Any) -> None:
        import torch

        try:
            # contents do not matter for a build; broadcast (stride-0) specs cannot be filled
            tensors = [spec.empty() for spec in self.inputs]
            key = compile_key(self.source, self.inputs, self.layout, device=self.layout.device)
            with shared_compiles(key):
                launch(*tensors, out=self.layout.empty())
            torch.cuda.synchronize(self.layout.device)
        except Exception as error:
            raise ChoiceFailed(
                f"{self.name}: Triton could not build or launch it ({type(error).__name__}: "
                f"{error}); it is left out of autotuning"
            ) from error

    def run(self, *inputs: Any, out: Any) -> None:
        if self._launch is None:
            self.compile()
        self._launch(*inputs, out=out)

    def cpp_launch(self) -> plugin.CppLaunch | None:
        """The C++ launch of this choice for exactly its ``inputs`` and ``layout``
        (``plugin.CppLaunch``; see ``cpp_launch``), compiling that specialization now; or
        ``None`` where there is no cubin to launch (the interpreter, a CPU tensor, a kernel
        ``launcher.unsupported_reason`` names) or the launch is more than the kernel
        (``vendor_first``: the vendor product runs first)."""
        import torch

        from .cpp_launch import launch_plan, render_gemm_launch, warm_args

        cuda = self.layout.device.startswith("cuda")
        if self.vendor_first or plugin.triton_interpreted() or not cuda:
            return None
        module = load_module(self.source, self.name)
        plan = launch_plan(module, self.inputs, self.layout)
        device = torch.device(self.layout.device)
        index = device.index if device.index is not None else torch.cuda.current_device()
        if plan.grid is None:
            return render_gemm_launch(None, plan, index)
        with torch.cuda.device(index):
            compiled = module.KERNEL.warmup(
                *warm_args(plan, device), grid=plan.grid, **plan.constexprs, **module.OPTIONS
            )
        return render_gemm_launch(compiled, plan, index)
