"""The public plugin API of tilefuse: every type a plugin may use lives here.

A plugin is an ordinary pip distribution that declares an entry point in one of
these groups (see ``ENTRY_POINT_GROUPS``):

``tilefuse.backends``
    The entry point names a ``DeviceBackend`` object. Importing the module that
    holds it must be cheap and import no device toolkit: tilefuse reads
    ``info`` and calls ``availability()`` when it lists plugins, and calls
    ``load()`` only when a graph actually needs the backend.
``tilefuse.scheduling``
    The entry point names a ``SchedulingPolicy`` object.
``tilefuse.autotune.choices``
    The entry point names a ``ChoiceProvider`` object.

Every object carries ``api_version``; tilefuse refuses an object whose version
differs from ``API_VERSION`` and says so. Nothing outside this module is part
of the plugin contract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

API_VERSION = 1

BACKENDS_GROUP = "tilefuse.backends"
SCHEDULING_GROUP = "tilefuse.scheduling"
CHOICES_GROUP = "tilefuse.autotune.choices"
ENTRY_POINT_GROUPS = (BACKENDS_GROUP, SCHEDULING_GROUP, CHOICES_GROUP)

# Capabilities a backend may declare in ``BackendInfo.capabilities``.
CAP_POINTWISE = "pointwise"
CAP_REDUCTION = "reduction"
CAP_TEMPLATE_GEMM = "template:gemm"


@dataclass(frozen=True)
class Verdict:
    """An answer to "may this be done?" that always carries its reason when not."""

    ok: bool
    reason: str = ""

    @classmethod
    def yes(cls) -> Verdict:
        return cls(True)

    @classmethod
    def no(cls, reason: str) -> Verdict:
        if not reason:
            raise ValueError("a refusal needs a reason")
        return cls(False, reason)

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class Availability:
    """Whether a plugin can run on this machine; ``reason`` says why not."""

    ok: bool
    reason: str = ""

    @classmethod
    def available(cls, detail: str = "") -> Availability:
        return cls(True, detail)

    @classmethod
    def unavailable(cls, reason: str) -> Availability:
        return cls(False, reason)


@dataclass(frozen=True)
class BackendInfo:
    """Phase-one description of a device backend: cheap to read, imports nothing.

    ``device_types`` are torch device types (``"cuda"``, ``"cpu"``...).
    ``capabilities`` names the kinds of node the backend can generate code for
    (``CAP_POINTWISE``, ``CAP_REDUCTION``, ``CAP_TEMPLATE_GEMM``...).
    Among available backends serving a device, the one with the highest
    ``priority`` that declares a node's capability owns that node.
    """

    name: str
    api_version: int
    device_types: tuple[str, ...]
    capabilities: frozenset[str]
    priority: int = 0
    description: str = ""


@runtime_checkable
class Kernel(Protocol):
    """A compiled (or lazily compiled) kernel that the wrapper can launch.

    ``name`` is unique within a graph, ``source`` is the generated text (written
    to the debug directory), and calling the kernel with the buffers listed in
    ``arg_names`` (torch tensors) plus the integer sizes in ``size_args``
    runs it on the current stream.
    """

    name: str
    source: str
    arg_names: Sequence[str]

    def __call__(self, *args: Any) -> None: ...


@runtime_checkable
class KernelScheduling(Protocol):
    """Phase-two object returned by ``DeviceBackend.load()``.

    One instance serves one compiled graph and device. ``producer``,
    ``consumer``, ``a`` and ``b`` are ``tilefuse.ir`` scheduler nodes; ``group``
    is a ``tilefuse.scheduler.FusedGroup``. ``can_fuse_*`` must not raise: a
    refusal is a ``Verdict.no(reason)`` and the reason is shown by
    ``tilefuse explain``.
    """

    def can_fuse_vertical(self, producer: Any, consumer: Any) -> Verdict: ...

    def can_fuse_horizontal(self, a: Any, b: Any) -> Verdict: ...

    def codegen(self, group: Any) -> Kernel: ...

    def codegen_template(self, template: Any, epilogue: Any) -> Kernel: ...


@runtime_checkable
class DeviceBackend(Protocol):
    """A device backend as found through the ``tilefuse.backends`` group.

    Contract:
    - ``info`` is available without importing any toolkit.
    - ``availability()`` is cheap, never raises, and says why when not ok
      (e.g. ``"no CUDA device"``, ``"nvcc not found"``).
    - ``load()`` is called at most once per process, on first use, and returns
      the backend's ``KernelScheduling`` factory: a callable taking a
      ``tilefuse.plugin.CompileContext`` and returning a ``KernelScheduling``.
    """

    info: BackendInfo

    def availability(self) -> Availability: ...

    def load(self) -> Callable[[CompileContext], KernelScheduling]: ...


@dataclass(frozen=True)
class CompileContext:
    """What a backend's scheduling is told about the graph it serves."""

    device: str  # torch device string, e.g. "cuda:0" or "cpu"
    policy: SchedulingPolicy | None
    debug_dir: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class SchedulingPolicy(Protocol):
    """A vendor's scheduling policy from the ``tilefuse.scheduling`` group.

    Contract:
    - ``uuid()`` identifies the policy and its settings; it enters every
      kernel and autotune cache key, so change it whenever decisions change.
    - ``rank_fusions(candidates)`` receives ``FusionCandidate`` objects and
      returns the ones to attempt, best first; leaving one out vetoes it.
    - ``tiling(group, device)`` returns backend config overrides (for the
      Triton backend: ``{"XBLOCK": 1024, "num_warps": 8}``...) or ``None`` to
      keep the backend's own heuristic.
    """

    name: str
    api_version: int

    def uuid(self) -> str: ...

    def rank_fusions(self, candidates: list[FusionCandidate]) -> list[FusionCandidate]: ...

    def tiling(self, group: Any, device: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class FusionCandidate:
    """A fusion the scheduler is about to attempt.

    ``kind`` is ``"vertical"`` or ``"horizontal"``; ``first`` and ``second`` are
    scheduler nodes or groups (their ``names`` attribute lists buffer names);
    ``score`` is the scheduler's own estimate of bytes saved.
    """

    kind: str
    first: Any
    second: Any
    score: int


@dataclass(frozen=True)
class EpilogueStep:
    """One step of a structured GEMM epilogue, applied to the accumulator.

    ``kind`` is one of ``"add_bias_row"`` (a vector broadcast along M),
    ``"add_bias_col"``, ``"add_matrix"`` (a residual of the output's shape),
    ``"mul_scalar"``, ``"relu"``, ``"gelu_erf"``, ``"gelu_tanh"``, ``"silu"``,
    ``"sigmoid"``, ``"tanh"``. ``operand`` indexes ``Epilogue.operands`` for
    steps that read a tensor; ``value`` holds a scalar.
    """

    kind: str
    operand: int | None = None
    value: float | None = None


@dataclass(frozen=True)
class Epilogue:
    """Pointwise work the scheduler fused after a template's result.

    ``steps`` is the structured form (empty for no epilogue); C++ templates
    render it and refuse what they cannot express. ``operands`` names the extra
    input buffers, ``out_dtype`` the final store dtype. ``nodes`` holds the
    scheduler's IR nodes for backends that render arbitrary bodies.
    """

    steps: tuple[EpilogueStep, ...] = ()
    operands: tuple[str, ...] = ()
    out_dtype: Any = None
    nodes: tuple[Any, ...] = ()

    def key(self) -> str:
        """A stable text form, used in autotune cache keys."""
        parts = [f"{s.kind}:{s.operand}:{s.value}" for s in self.steps]
        return "|".join(parts) + f"->{self.out_dtype}"


@runtime_checkable
class Choice(Protocol):
    """One candidate kernel for an op, as offered to the autotuner.

    ``name`` is unique within its provider and stable across runs (it enters
    the winners cache). ``compile()`` does the expensive build and may be run
    in a worker process, so the choice must be picklable; it raises
    ``tilefuse.errors.ChoiceFailed`` with a reason when the build fails.
    ``run(*inputs, out=...)`` launches it, writing into ``out``.
    """

    name: str

    def compile(self) -> None: ...

    def run(self, *inputs: Any, out: Any) -> None: ...


@runtime_checkable
class ChoiceProvider(Protocol):
    """A source of candidate kernels from the ``tilefuse.autotune.choices`` group.

    Contract: ``supports(op, device)`` is cheap and never raises; ``choices``
    yields ``Choice`` objects for ``op`` (``"mm"``, ``"addmm"``, ``"bmm"``) on
    ``inputs`` (tensors or tensor metadata), producing ``layout`` and applying
    ``epilogue`` (an ``Epilogue``). ``version`` enters the winners cache key.
    """

    name: str
    api_version: int
    version: str

    def supports(self, op: str, device: str) -> bool: ...

    def choices(
        self, op: str, inputs: Sequence[Any], layout: Any, epilogue: Epilogue
    ) -> Iterable[Choice]: ...


__all__ = [
    "API_VERSION",
    "BACKENDS_GROUP",
    "CAP_POINTWISE",
    "CAP_REDUCTION",
    "CAP_TEMPLATE_GEMM",
    "CHOICES_GROUP",
    "ENTRY_POINT_GROUPS",
    "SCHEDULING_GROUP",
    "Availability",
    "BackendInfo",
    "Choice",
    "ChoiceProvider",
    "CompileContext",
    "DeviceBackend",
    "Epilogue",
    "EpilogueStep",
    "FusionCandidate",
    "Kernel",
    "KernelScheduling",
    "SchedulingPolicy",
    "Verdict",
]
