"""The backends compared: eager, Inductor (default and max-autotune) and tilefuse, and, on
request (``cuda_graphs``), both compilers under ``mode="reduce-overhead"`` (CUDA graphs).

Each compiled backend is built under cold caches: fresh temporary TORCHINDUCTOR_CACHE_DIR,
TILEFUSE_CACHE_DIR and TRITON_CACHE_DIR, Inductor's in-memory caches cleared and
``torch._dynamo.reset()`` called, so its compile time is a first compile, not a cache hit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

FAMILIES = ("eager", "inductor", "tilefuse")
CACHE_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TILEFUSE_CACHE_DIR", "TRITON_CACHE_DIR")


@dataclass(frozen=True)
class BackendSpec:
    """One column of the comparison.

    ``family`` is what ``--backends`` selects; ``kinds`` limits the workload kinds it runs on
    (``None``: all); ``env`` is set while it compiles and runs. ``cuda_graphs``: compiled
    with ``mode="reduce-overhead"``, whose first call warms up and second captures, so a
    harness checks and times it from the third call on.
    """

    name: str
    family: str
    compile_kwargs: dict[str, Any] | None  # None: eager, nothing is compiled
    kinds: frozenset[str] | None = None
    env: tuple[tuple[str, str], ...] = ()
    cuda_graphs: bool = False

    @property
    def compiles(self) -> bool:
        return self.compile_kwargs is not None

    def runs_on(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds

    def prepare(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` itself for eager, else ``torch.compile(fn, **compile_kwargs)`` (lazy)."""
        if self.compile_kwargs is None:
            return fn
        return torch.compile(fn, **self.compile_kwargs)


#: The CUDA-graph columns (``specs(..., cuda_graphs=True)``), on the model workloads only.
CUDA_GRAPH_KINDS = frozenset({"model"})


def specs(
    families: list[str], strict_tilefuse: bool = True, cuda_graphs: bool = False
) -> list[BackendSpec]:
    """The backend columns for the chosen families, in a fixed order; with ``cuda_graphs``
    also ``inductor_cg`` and ``tilefuse_cg`` (``mode="reduce-overhead"``, model workloads),
    after the others.

    Raises ``ValueError`` on an unknown family, naming the known ones.
    """
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}; known: {', '.join(FAMILIES)}")
    out = []
    if "eager" in families:
        out.append(BackendSpec("eager", "eager", None))
    if "inductor" in families:
        out.append(BackendSpec("inductor", "inductor", {}))
        out.append(
            BackendSpec(
                "inductor_max",
                "inductor",
                {"mode": "max-autotune-no-cudagraphs"},
                kinds=frozenset({"gemm"}),
            )
        )
    if "tilefuse" in families:
        env = (("TILEFUSE_STRICT", "1"),) if strict_tilefuse else ()
        out.append(BackendSpec("tilefuse", "tilefuse", {"backend": "tilefuse"}, env=env))
        out.append(
            BackendSpec(
                "tilefuse_max",
                "tilefuse",
                {"backend": "tilefuse"},
                kinds=frozenset({"gemm"}),
                env=(*env, ("TILEFUSE_AUTOTUNE", "max")),
            )
        )
    if cuda_graphs and "inductor" in families:
        out.append(
            BackendSpec(
                "inductor_cg",
                "inductor",
                {"mode": "reduce-overhead"},
                kinds=CUDA_GRAPH_KINDS,
                cuda_graphs=True,
            )
        )
    if cuda_graphs and "tilefuse" in families:
        env = (("TILEFUSE_STRICT", "1"),) if strict_tilefuse else ()
        out.append(
            BackendSpec(
                "tilefuse_cg",
                "tilefuse",
                {"backend": "tilefuse", "mode": "reduce-overhead"},
                kinds=CUDA_GRAPH_KINDS,
                env=env,
                cuda_graphs=True,
            )
        )
    return out


def tilefuse_stats() -> dict[str, int]:
    """``tilefuse.stats()`` as a dict; empty where tilefuse is not installed."""
    try:
        import tilefuse
    except ImportError:
        return {}
    return dict(tilefuse.stats())


def counter_delta(before: dict[str, int], after: dict[str, int], keys: Any) -> dict[str, int]:
    """``after - before`` for each counter in ``keys``."""
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys}


def _cxx_compiler() -> str | None:
    for name in (os.environ.get("CXX", ""), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def unusable_reason(spec: BackendSpec, device: torch.device) -> str | None:
    """Why ``spec`` cannot run on ``device`` here, or ``None`` when it can (as far as a cheap
    check can tell; a failure while compiling is still recorded per workload)."""
    if not spec.compiles:
        return None
    if spec.family == "inductor":
        if device.type == "cuda":
            from torch.utils._triton import has_triton

            return None if has_triton() else "Triton is not usable on this CUDA device"
        if device.type == "cpu":
            return None if _cxx_compiler() else "Inductor's CPU backend needs a C++ compiler"
        return None
    if spec.family == "tilefuse":
        return _tilefuse_unusable(device)
    return None


def _tilefuse_unusable(device: torch.device) -> str | None:
    try:
        import tilefuse  # noqa: F401
    except ImportError as exc:
        return f"tilefuse is not installed ({exc}); pip install -e packages/core and a backend"
    if "tilefuse" not in torch._dynamo.list_backends(exclude_tags=()):
        return "the torch_dynamo_backends entry point 'tilefuse' is not registered"
    try:
        from tilefuse import backend_selection, plugin
    except ImportError:
        return None  # internal layout changed: let the compile say what is wrong
    try:
        backend_selection.owner(device.type, plugin.CAP_POINTWISE)
    except Exception as exc:  # NoBackendError or a broken plugin: both mean "not usable"
        return f"no tilefuse backend serves {device.type}: {exc}"
    return None


def _clear_inductor_caches() -> None:
    try:
        import torch._inductor.utils as inductor_utils
    except ImportError:
        return
    clear = getattr(inductor_utils, "clear_caches", None) or getattr(
        inductor_utils, "clear_inductor_caches", None
    )
    if clear is not None:
        clear()


#: ``bench/run.py --artifacts DIR`` sets it: tilefuse's built artifacts (the ``cuda/``
#: nvcc builds) are taken from DIR into each fresh cache and new ones saved back.
ARTIFACTS_ENV = "TILEFUSE_BENCH_ARTIFACTS"
ARTIFACT_KINDS = ("cuda",)


def _stop_autotune_workers() -> None:
    """Stop tilefuse's autotune workers, background nvcc builds included, so that they
    neither outlive the column's cache directory nor load the CPU of the next column."""
    import sys

    autotune = sys.modules.get("tilefuse_autotune")
    if autotune is not None:
        autotune.release_workers()


def _copy_artifacts(src: str, dst: str) -> None:
    for kind in ARTIFACT_KINDS:
        if os.path.isdir(os.path.join(src, kind)):
            shutil.copytree(os.path.join(src, kind), os.path.join(dst, kind), dirs_exist_ok=True)


def wait_for_tilefuse_builds() -> None:
    """Let the C++ wrappers tilefuse builds in the background (its default on CUDA) end."""
    try:
        import tilefuse
    except ImportError:
        return
    tilefuse.wait_for_builds()


@contextlib.contextmanager
def cold_caches(extra_env: tuple[tuple[str, str], ...] = ()) -> Iterator[str]:
    """Fresh cache directories (and ``extra_env``) for one backend's compile and measurement.

    Yields the temporary root; on exit waits for tilefuse's background C++ wrapper builds,
    restores the environment and deletes the directories, resetting Dynamo so no compiled
    graph outlives the block. With ``TILEFUSE_BENCH_ARTIFACTS``
    set, tilefuse's cache starts with that directory's built artifacts (and gives its new
    ones back): autotuning then measures cached nvcc builds instead of starting them.
    """
    root = tempfile.mkdtemp(prefix="tilefuse-bench-")
    artifacts = os.environ.get(ARTIFACTS_ENV, "").strip()
    if artifacts:
        _copy_artifacts(artifacts, os.path.join(root, "tilefuse"))
    values = {
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(root, "inductor"),
        "TILEFUSE_CACHE_DIR": os.path.join(root, "tilefuse"),
        "TRITON_CACHE_DIR": os.path.join(root, "triton"),
        **dict(extra_env),
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    _clear_inductor_caches()
    torch._dynamo.reset()
    try:
        yield root
    finally:
        wait_for_tilefuse_builds()  # they write into this cache and count in stats()
        _stop_autotune_workers()
        if artifacts:
            _copy_artifacts(os.path.join(root, "tilefuse"), artifacts)
        torch._dynamo.reset()
        _clear_inductor_caches()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(root, ignore_errors=True)
