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
``tilefuse.autotune.selector``
    The entry point names a ``TemplateSelector`` object: the autotuner that picks
    a kernel for each GEMM template (tilefuse-autotune ships one). With none
    installed, templates run as eager torch calls (``ExternChoice``).

Every object carries ``api_version``; tilefuse refuses an object whose version
differs from ``API_VERSION`` and says so. Nothing outside this module is part
of the plugin contract: a backend imports ``tilefuse.plugin`` (and the typed
errors of ``tilefuse.errors``), never ``tilefuse.scheduler``, ``tilefuse.codegen``,
``tilefuse.frontend`` or ``tilefuse.ir``.

API versions
------------
2
    The codegen contract. ``KernelScheduling.codegen`` receives a ``KernelSpec``
    (plain data: iteration space, members with bodies over ``X``/``R``, stores and
    buffer layouts) named by core, instead of a scheduler ``FusedGroup``;
    ``can_fuse_vertical``/``can_fuse_horizontal`` receive ``FusionQuery`` objects
    instead of scheduler nodes; ``SchedulingPolicy.tiling`` receives the
    ``KernelSpec``. ``CompileContext.options`` is gone: it carried only core's
    buffers, which each ``KernelSpec`` now describes (``KernelSpec.buffers``).
    Helpers a backend needs (the ops-handler protocol, index functions, the
    verified build cache, the settings it reads) are re-exported here lazily.

    One question for GEMM epilogues: ``ChoiceProvider.accepts(op, inputs, layout,
    epilogue) -> Verdict`` says whether a provider offers a kernel with that epilogue
    fused, and ``TemplateSelector.accepts`` (same arguments) answers for all of its
    providers. The scheduler asks the selector once per candidate epilogue, with the
    ``Epilogue`` it matched, and is not asked again; a provider's ``choices`` yields
    nothing for a request it does not accept. Backends are no longer asked
    ``can_fuse_vertical`` about templates.
    Removed because nothing called them: ``KernelScheduling.codegen_template`` (GEMM
    kernels come from choice providers), ``CompileContext.debug_dir`` and the
    ``cache_subdir`` helper.

    Added later in version 2, optional (a plugin without it works unchanged): a kernel
    (or a template ``Choice``) may have ``cpp_launch() -> CppLaunch | None``, the C++
    that launches it without Python, used by the experimental C++ wrapper
    (``cpp_wrapper``). A graph with a kernel that has none runs the Python wrapper.

    Added later in version 2, optional: symbolic sizes. ``KernelSpec.size_hints`` (empty
    for static sizes) and ``Kernel.size_args``; helpers ``is_size_symbol`` and
    ``size_function``. A backend that ignores them fails on a symbolic spec, and the
    graph is compiled per shape as before.
1
    The first published surface: backends were handed core's scheduler objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from .kernel_spec import (
    KERNEL_SPEC_VERSION,
    BufferSpec,
    FusionQuery,
    GroupKind,
    KernelSpec,
    Level,
    MemberSpec,
    R,
    X,
)

API_VERSION = 2  # see "API versions" in the module docstring

BACKENDS_GROUP = "tilefuse.backends"
SCHEDULING_GROUP = "tilefuse.scheduling"
CHOICES_GROUP = "tilefuse.autotune.choices"
SELECTORS_GROUP = "tilefuse.autotune.selector"
ENTRY_POINT_GROUPS = (BACKENDS_GROUP, SCHEDULING_GROUP, CHOICES_GROUP, SELECTORS_GROUP)

# Capabilities a backend may declare in ``BackendInfo.capabilities``.
CAP_POINTWISE = "pointwise"
CAP_REDUCTION = "reduction"
CAP_TEMPLATE_GEMM = "template:gemm"
# Not a kind of node: "convolutions on my device types run fastest channels-last (NHWC)".
# Core then lays out 4-D convolution graphs on that device channels-last
# (``TILEFUSE_CHANNELS_LAST=auto``). A backend declares it only when it holds for every
# device type it serves.
CAP_CHANNELS_LAST = "layout:channels-last"
# Not a kind of node either: "my device types run many programs at once, so a reduction with
# few outputs and a long reduction runs faster in two stages" (partials per chunk, then the
# partials). Core then splits such reductions on that device (``TILEFUSE_SPLIT_REDUCTIONS=
# auto``); the stages are ordinary reductions, so the backend renders nothing new.
CAP_SPLIT_REDUCTIONS = "reduction:split"
# An op, not a node kind: "my kernels render ``ops.rand(seed, offset)``": a float32 drawn
# uniformly from [0, 1) by a counter-based generator keyed by the int64 ``seed`` at the
# int64 ``offset``, the same pair always giving the same value. Where the backends owning
# pointwise and reduction kernels on a device both declare it, core generates random
# tensors inside kernels there (dropout's mask fuses into its consumers); elsewhere they
# are eager calls. ``rand`` is not in ``OP_NAMES`` (``OPTIONAL_OPS``): backends without
# the capability never render it.
CAP_RANDOM = "op:rand"
# A reduction type, not a node kind: "my reduction kernels render ``softmax_sum``" (see
# ``ir.nodes.Reduction``). Where the backend owning a device's reductions declares it,
# core lowers ``sum(exp(x - amax(x)))`` (log_softmax's denominator, a cross-entropy's) as
# one, which such a backend computes next to the max in one read of the row.
CAP_SOFTMAX_SUM = "reduction:softmax_sum"

# The GEMM-family ops of the template contract (``Choice`` gives each one's inputs), with
# how many op inputs come before the epilogue's operands. The one table of them.
GEMM_OPS: Mapping[str, int] = MappingProxyType({"mm": 2, "addmm": 3, "bmm": 2})

# The float and integer dtypes tilefuse compiles, by name: ``BackendInfo.dtypes``' default.
DEFAULT_DTYPES = (
    "float32", "float16", "bfloat16", "float64", "int8", "int16", "int32", "int64", "uint8",
)  # fmt: skip


def dtype_name(dtype: Any) -> str:
    """A torch dtype's name without the ``torch.`` prefix (``torch.bfloat16`` -> ``"bfloat16"``).

    The form dtypes take in ``TensorSpec``, ``Epilogue`` and cache keys.
    """
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> Any:
    """The torch dtype called ``name`` (``"bfloat16"``); inverse of ``dtype_name``.

    Raises ``ValueError`` when torch has no dtype of that name.
    """
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{name!r} is not a torch dtype name (e.g. 'float32', 'bfloat16')")
    return dtype


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
    ``dtypes`` names (as ``dtype_name`` writes them) the tensor dtypes its kernels
    compute correctly; ``tilefuse conformance`` checks each one against eager.
    ``description`` is one line that ``tilefuse backends`` shows under the backend.
    """

    name: str
    api_version: int
    device_types: tuple[str, ...]
    capabilities: frozenset[str]
    priority: int = 0
    description: str = ""
    dtypes: tuple[str, ...] = DEFAULT_DTYPES


@runtime_checkable
class Kernel(Protocol):
    """A compiled (or lazily compiled) kernel that the wrapper can launch.

    ``name`` is unique within a graph, ``source`` is the generated text (written
    to the debug directory), and calling the kernel with the buffers listed in
    ``arg_names`` (torch tensors) plus the integer sizes in ``size_args``
    runs it on the current stream.

    ``size_args`` (optional; none when absent) names the size symbols of a symbolic
    ``KernelSpec`` that the kernel takes after its tensors, in order (see
    ``tilefuse.kernel_spec``): the wrapper passes their values for each call.

    Optional: ``cpp_launch() -> CppLaunch | None``, the C++ that launches the built
    kernel without Python (the C++ wrapper; see ``CppLaunch``).
    """

    name: str
    source: str
    arg_names: Sequence[str]

    def __call__(self, *args: Any) -> None: ...


@dataclass(frozen=True)
class CppLaunch:
    """How the C++ wrapper (option ``cpp_wrapper``) launches one kernel without Python.

    A kernel object (``Kernel``, or a template ``Choice``) may offer it through an
    optional method ``cpp_launch() -> CppLaunch | None``, asked after the kernel was
    built; ``None`` (or no such method) means "only from Python", and the whole graph
    then runs the Python wrapper (one warning naming the kernel).

    Contract of the C++ text:
    - ``declarations`` is C++ at namespace scope. Core puts it inside a namespace of its
      own per kernel, so its names cannot clash with another kernel's; it must define
      ``void <function>(const at::Tensor&, ...)`` taking the tensors the Python wrapper
      passes, in the same order (a ``Kernel``: its ``arg_names``; a ``Choice``: the op's
      inputs, the epilogue's operands, then ``out``). The function launches on the
      current stream of the tensors' device and reports failure by throwing
      (``TORCH_CHECK``); it is called with the GIL held.
    - ``shared`` is C++ emitted once at namespace scope for every launch of the graph
      that has the same text (helpers a backend's kernels share, e.g. a driver loader);
      put it in a namespace named after the backend.
    - ``blobs`` maps a C++ identifier to bytes (a cubin, say) that core defines before
      ``declarations`` in the kernel's namespace as ``static const unsigned char
      NAME[]`` and ``static const size_t NAME_size``.
    - ``headers`` are ``#include`` targets (``"cuda.h"``, ``"ATen/cuda/CUDAContext.h"``);
      ``include_dirs``, ``library_dirs`` and ``libraries`` (linked as ``-lNAME``) are
      added to the compile. Torch's headers and its core libraries are always there.
    The text enters the built library's cache key: the same text is built once.
    """

    function: str
    declarations: str
    shared: str = ""
    blobs: Mapping[str, bytes] = field(default_factory=dict)
    headers: tuple[str, ...] = ()
    include_dirs: tuple[str, ...] = ()
    library_dirs: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ()


@runtime_checkable
class KernelScheduling(Protocol):
    """Phase-two object returned by ``DeviceBackend.load()``.

    One instance serves one compiled graph and device. ``producer``,
    ``consumer``, ``a`` and ``b`` are ``FusionQuery`` objects (a group or a single
    node the scheduler is about to fuse). ``can_fuse_*`` must not raise: a refusal
    is a ``Verdict.no(reason)`` and the reason is shown by ``tilefuse explain``.
    ``codegen(spec)`` renders one fused kernel described by a ``KernelSpec`` and
    returns a ``Kernel`` called ``spec.name`` (unique within the graph: core picks
    it) whose ``arg_names`` are buffer names from ``spec.buffers``. A kernel with a
    ``build()`` method is built when the graph is compiled, not at first launch.

    GEMM templates are not rendered here: a backend that declares ``CAP_TEMPLATE_GEMM``
    offers its kernels through a ``ChoiceProvider``, which also answers whether it can
    fuse an epilogue (``ChoiceProvider.accepts``).
    """

    def can_fuse_vertical(self, producer: FusionQuery, consumer: FusionQuery) -> Verdict: ...

    def can_fuse_horizontal(self, a: FusionQuery, b: FusionQuery) -> Verdict: ...

    def codegen(self, spec: KernelSpec) -> Kernel: ...


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

    A backend that breaks this contract (``info`` not a ``BackendInfo``;
    ``availability()`` raising or answering anything but an ``Availability``;
    ``load()`` raising or returning something not callable) is refused: logged
    once with its distribution, listed as broken by ``tilefuse backends``, and its
    nodes go to the next backend declaring the capability
    (``tilefuse.backend_selection``). Asking for it in ``TILEFUSE_BACKENDS`` raises.
    """

    info: BackendInfo

    def availability(self) -> Availability: ...

    def load(self) -> Callable[[CompileContext], KernelScheduling]: ...


@dataclass(frozen=True)
class CompileContext:
    """What a backend's scheduling is told about the graph it serves: its device, the
    active (checked) policy and the plugin versions that salt cache keys. Each kernel's
    buffers come with its ``KernelSpec``."""

    device: str  # torch device string, e.g. "cuda:0" or "cpu"
    policy: SchedulingPolicy | None
    # "distribution version" of tilefuse-core, the backend and the policy, e.g.
    # ("tilefuse-core 0.1.0", "tilefuse-backend-triton 0.1.0").
    plugin_versions: tuple[str, ...] = ()

    def cache_salt(self) -> str:
        """What a backend adds to its kernel-cache keys besides the kernel's source: the
        active policy's ``uuid()`` and ``plugin_versions``, so that a new policy or an
        upgraded plugin never reuses a kernel built under the old one. Core passes a
        checked policy, whose ``uuid()`` was validated once and never raises."""
        policy = self.policy.uuid() if self.policy is not None else ""
        return f"policy={policy};plugins={','.join(self.plugin_versions)}"


@runtime_checkable
class SchedulingPolicy(Protocol):
    """A vendor's scheduling policy from the ``tilefuse.scheduling`` group.

    Contract:
    - ``uuid()`` identifies the policy and its settings; it enters every
      kernel and autotune cache key, so change it whenever decisions change.
    - ``rank_fusions(candidates)`` receives ``FusionCandidate`` objects and
      returns the ones to attempt, best first; leaving one out vetoes it.
    - ``tiling(spec, device)`` receives the ``KernelSpec`` about to be rendered
      (``spec.kind``, ``spec.xnumel``, ``spec.rnumel``, ``spec.members``...) and the
      device string, and returns backend config overrides or ``None`` to
      keep the backend's own heuristic. Keys: ``XBLOCK`` and ``RBLOCK`` (int powers
      of two, product at most 2**20; ``RBLOCK`` is 1 for a one-dimensional pointwise
      kernel), ``num_warps`` (a power of two up to 32) and, for reductions only,
      ``persistent`` (``True``: one pass, so ``RBLOCK`` must cover the row;
      ``False``: a loop over the row, ``RBLOCK`` elements at a time). An ``RBLOCK``
      below the row length needs ``"persistent": False``.

    Core checks every answer before anything uses it (``tilefuse.policy_check``):
    a ``uuid()`` that raises or is not a non-empty str refuses the whole policy; a
    ``rank_fusions`` or ``tiling`` answer that raises or breaks the rules above is
    refused with one warning naming the policy, and the scheduler's order or the
    backend's tiling is used instead (``TILEFUSE_STRICT`` raises).
    """

    name: str
    api_version: int

    def uuid(self) -> str: ...

    def rank_fusions(self, candidates: list[FusionCandidate]) -> list[FusionCandidate]: ...

    def tiling(self, spec: KernelSpec, device: str) -> dict[str, Any] | None: ...


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


EPILOGUE_KINDS = (
    "add_bias_n",  # + operand of shape [N], broadcast over rows (nn.Linear's bias)
    "add_bias_m",  # + operand of shape [M, 1] (or [B, M, 1]), broadcast over columns
    "add_matrix",  # + operand of the output's shape (a residual); any strides
    "mul_scalar",  # * value
    "relu",
    "gelu_erf",  # x * 0.5 * (1 + erf(x / sqrt(2)))
    "gelu_tanh",  # x * 0.5 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))
    "silu",
    "sigmoid",
    "tanh",
)


@dataclass(frozen=True)
class EpilogueStep:
    """One step of a structured GEMM epilogue, applied in float32 to the accumulator.

    A choice may instead apply the steps to the product already rounded to the output's
    dtype, as the unfused graph and eager do (the Triton provider's ``vendor_first``
    choices: the vendor product, then a pass); the autotuner's correctness check holds
    every choice to the reference within the dtype's tolerance either way.

    ``kind`` is one of ``EPILOGUE_KINDS``. ``operand`` indexes
    ``Epilogue.operands`` for steps that read a tensor; ``value`` holds a scalar.
    """

    kind: str
    operand: int | None = None
    value: float | None = None


@dataclass(frozen=True)
class TensorSpec:
    """Shape, strides, dtype and device of a tensor, without the tensor (picklable).

    ``dtype`` is the torch dtype's name without the ``torch.`` prefix
    (``"bfloat16"``); ``device`` is a torch device string.
    """

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str
    device: str

    @classmethod
    def of(cls, tensor: Any) -> TensorSpec:
        return cls(
            tuple(int(s) for s in tensor.shape),
            tuple(int(s) for s in tensor.stride()),
            dtype_name(tensor.dtype),
            str(tensor.device),
        )

    def torch_dtype(self) -> Any:
        return dtype_from_name(self.dtype)

    def empty(self) -> Any:
        """An uninitialised tensor with exactly this layout."""
        import torch

        return torch.empty_strided(
            self.shape, self.stride, dtype=self.torch_dtype(), device=self.device
        )

    def random(self, generator: Any = None) -> Any:
        """A tensor with this layout holding values from N(0, 1) (integers: 0..9), drawn
        on the generator's device (the CPU without one)."""
        import torch

        out = self.empty()
        where = generator.device if generator is not None else "cpu"
        if out.dtype.is_floating_point:
            out.copy_(torch.randn(self.shape, generator=generator, device=where))
        else:
            out.copy_(torch.randint(0, 10, self.shape, generator=generator, device=where))
        return out


@dataclass(frozen=True)
class Epilogue:
    """Pointwise work the scheduler fused after a template's result.

    ``steps`` (possibly empty) apply in order to the float32 accumulator (after
    ``addmm``'s bias); the result is stored as ``out_dtype`` (a torch dtype
    name; ``None`` keeps the op's dtype). ``operands`` describes the extra
    input tensors that steps read; at run time they follow the op's own inputs.
    Templates render the steps they can and refuse the whole epilogue otherwise.
    """

    steps: tuple[EpilogueStep, ...] = ()
    operands: tuple[TensorSpec, ...] = ()
    out_dtype: str | None = None

    def key(self) -> str:
        """A stable text form, used in cache keys."""
        parts = [f"{s.kind}:{s.operand}:{s.value}" for s in self.steps]
        ops = [f"{o.shape}/{o.stride}/{o.dtype}" for o in self.operands]
        return "|".join(parts) + f";{','.join(ops)}->{self.out_dtype}"

    def apply_reference(self, acc: Any, operands: Sequence[Any]) -> Any:
        """The meaning of ``steps``: applied with torch to ``acc`` (any float dtype).

        Returns a tensor of ``out_dtype`` (or ``acc``'s dtype). This is the
        definition every template must match.
        """
        import math

        import torch

        out_dtype = dtype_from_name(self.out_dtype) if self.out_dtype else acc.dtype
        x = acc.float()
        for step in self.steps:
            kind = step.kind
            if kind in ("add_bias_n", "add_bias_m", "add_matrix"):
                assert step.operand is not None
                x = x + operands[step.operand].float()
            elif kind == "mul_scalar":
                x = x * float(step.value if step.value is not None else 1.0)
            elif kind == "relu":
                x = torch.relu(x)
            elif kind == "gelu_erf":
                x = x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
            elif kind == "gelu_tanh":
                inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)
                x = x * 0.5 * (1.0 + torch.tanh(inner))
            elif kind == "silu":
                x = x * torch.sigmoid(x)
            elif kind == "sigmoid":
                x = torch.sigmoid(x)
            elif kind == "tanh":
                x = torch.tanh(x)
            else:
                raise ValueError(f"unknown epilogue step {kind!r}; known: {EPILOGUE_KINDS}")
        return x.to(out_dtype)


@runtime_checkable
class Choice(Protocol):
    """One candidate kernel for an op, as offered to the autotuner.

    ``name`` is unique within its provider and stable across runs (it enters
    the winners cache). ``compile()`` does the expensive build and may be run
    in a worker process, so the choice must be picklable; it raises
    ``tilefuse.errors.ChoiceFailed`` with a reason when the build fails.
    ``run(*inputs, out=...)`` launches it on the current stream, writing into
    ``out``; ``inputs`` are the op's tensors followed by the epilogue's operands.

    Op conventions (``op`` strings): ``"mm"``: ``(a[M,K], b[K,N])``;
    ``"addmm"``: ``(bias, a, b)`` computing ``bias + a @ b`` with ``bias`` of
    shape ``[N]`` or ``[M, N]``; ``"bmm"``: ``(a[B,M,K], b[B,K,N])``.

    Optional attribute ``slow_build`` (absent means ``False``): ``True`` when
    ``compile()`` takes many seconds (an nvcc build, say). The autotuner never takes
    such a choice unmeasured, so compiles that do not benchmark stay fast, and waits for
    its build only as long as ``TILEFUSE_AUTOTUNE_BUILD_WAIT_S`` says. Optional methods of
    such a choice: ``build_cached() -> bool``, cheap, ``True`` when ``compile()`` would
    find its artifact already built (then it is waited for like any quick build); and
    ``build_key() -> str``, equal for choices that share one artifact (one build serves
    them all).

    Optional attribute ``thread_safe_build`` (absent means ``False``): ``True`` when
    ``compile()`` may run on several threads of one process at once and takes about a
    second (a Triton JIT build). The autotuner then builds such choices on threads of each
    benchmark worker, not in its compile workers: one GPU start-up instead of one per
    compile worker, and the measuring process finds them built.

    Optional attribute ``vendor_first`` (absent means ``False``): ``True`` when the
    choice runs the vendor library's product and then the epilogue as one separate pass,
    which is what a graph that leaves the epilogue unfused runs. A measuring autotuner
    compares its winner with such a choice in a sustained loop when their measured times
    are close (the default mode's graph runs it, unfused).

    Optional attribute ``any_size`` (absent means ``False``): ``True`` when ``run`` is
    correct for tensors of any sizes and strides no larger than the specs the choice was
    made for, with their dtypes, ranks and broadcast patterns (its kernel reads sizes
    and strides when it runs). A graph of symbolic sizes then reuses one pick for every
    size of a bucket (``tilefuse.codegen.size_buckets``); any other choice is picked
    again for each exact size.
    """

    name: str

    def compile(self) -> None: ...

    def run(self, *inputs: Any, out: Any) -> None: ...


@runtime_checkable
class ChoiceProvider(Protocol):
    """A source of candidate kernels from the ``tilefuse.autotune.choices`` group.

    Contract:
    - ``supports(op, device)`` is cheap and never raises: whether the provider serves
      ``op`` (``"mm"``, ``"addmm"``, ``"bmm"``) on ``device`` at all.
    - ``accepts(op, inputs, layout, epilogue)`` is the one question about a concrete
      request: can the provider offer a kernel for ``op`` whose inputs are ``inputs``
      (``TensorSpec``: the op's tensors, then the epilogue's operands), producing
      ``layout`` (a ``TensorSpec``) with ``epilogue`` fused? ``Verdict.no(reason)``
      says why not (``tilefuse explain`` shows it). Cheap (no build), never raises;
      asked only when ``supports`` said yes.
    - ``choices`` yields the ``Choice`` objects for a request, and nothing for one that
      ``accepts`` refuses (the autotuner does not ask ``accepts`` again before it).
    - ``version`` enters the winners cache key.
    """

    name: str
    api_version: int
    version: str

    def supports(self, op: str, device: str) -> bool: ...

    def accepts(
        self, op: str, inputs: Sequence[TensorSpec], layout: TensorSpec, epilogue: Epilogue
    ) -> Verdict: ...

    def choices(
        self, op: str, inputs: Sequence[TensorSpec], layout: TensorSpec, epilogue: Epilogue
    ) -> Iterable[Choice]: ...


@runtime_checkable
class Selected(Protocol):
    """What a ``TemplateSelector`` picked: ``choice`` (a ``Choice``), its ``label``
    (``provider/name``, shown in reports) and ``summary`` (one line saying how it was
    picked, e.g. benchmarked or cached)."""

    @property
    def choice(self) -> Choice: ...

    @property
    def label(self) -> str: ...

    @property
    def summary(self) -> str: ...


@runtime_checkable
class TemplateSelector(Protocol):
    """The autotuner, from the ``tilefuse.autotune.selector`` group; core never imports it.

    Contract: ``select(op, inputs, layout, epilogue)`` picks a kernel for ``op`` (a
    ``GEMM_OPS`` key) whose inputs are ``inputs`` (``TensorSpec``: the op's tensors, then
    the epilogue's operands), producing ``layout`` with ``epilogue`` fused, and returns a
    ``Selected`` whose choice core then ``compile()``s and runs. It may benchmark. It
    gathers candidates from the ``tilefuse.autotune.choices`` providers and must always
    be able to answer (``ExternChoice`` runs anything); an error it raises fails the
    graph's compile, which then runs eagerly. At most one selector may be installed.

    ``accepts(op, inputs, layout, epilogue)`` (same arguments) answers, for all of the
    selector's providers together, whether a kernel with ``epilogue`` fused is offered:
    ``Verdict.yes()`` when at least one provider ``accepts`` the request, else a
    ``Verdict.no`` naming each provider's reason. The scheduler asks it once per
    candidate epilogue and fuses the epilogue only on a yes. Never raises.

    Optional ``warm_up(device_type)``: called once per process and device type
    (``"cuda"``...), at the first graph compiled for it in any autotune mode but ``off``,
    before tracing; it may start background work a later ``select`` needs (the autotuner
    starts the process its benchmark workers fork from) and must return at once.
    """

    name: str
    api_version: int

    def accepts(
        self, op: str, inputs: Sequence[TensorSpec], layout: TensorSpec, epilogue: Epilogue
    ) -> Verdict: ...

    def select(
        self, op: str, inputs: Sequence[TensorSpec], layout: TensorSpec, epilogue: Epilogue
    ) -> Selected: ...


# Helpers for backends, re-exported lazily so that reading ``plugin`` stays cheap:
# the ops-handler protocol, index functions, the verified build cache and the settings
# (from ``tilefuse.config``, the one place that reads them) that backends consult, the
# remote cache (``remote_get``/``remote_put``, verified values shared between processes;
# no-ops without ``TILEFUSE_REMOTE_CACHE``), ``bump_counter`` (a backend's own counter in
# ``tilefuse.stats()``), and
# ``GemmShape``, the one validation of a GEMM request every template provider starts from
# (lazy as well: its module imports this one).
_HELPERS = {
    "OP_NAMES": ("tilefuse.ir.ops", "OP_NAMES"),
    "ops_handler": ("tilefuse.ir.ops", "ops_handler"),
    "FloorDiv": ("tilefuse.ir.index", "FloorDiv"),
    "ModularIndexing": ("tilefuse.ir.index", "ModularIndexing"),
    "stride_of": ("tilefuse.ir.index", "stride_of"),
    "provably_within": ("tilefuse.ir.index", "provably_within"),
    "IntegerExprPrinter": ("tilefuse.ir.symbolic", "PythonPrinter"),
    "is_size_symbol": ("tilefuse.ir.index", "is_size_symbol"),
    "size_function": ("tilefuse.ir.symbolic", "size_function"),
    "atomic_write": ("tilefuse.codegen.kernel_cache", "atomic_write"),
    "build_artifact": ("tilefuse.codegen.kernel_cache", "build_artifact"),
    "has_artifact": ("tilefuse.codegen.kernel_cache", "has_artifact"),
    "load_module": ("tilefuse.codegen.kernel_cache", "load_module"),
    "store_source": ("tilefuse.codegen.kernel_cache", "store_source"),
    "triton_interpreted": ("tilefuse.config", "triton_interpreted"),
    "autotune_mode": ("tilefuse.config", "autotune_mode"),
    "positive_int_env": ("tilefuse.config", "positive_int_env"),
    "remote_enabled": ("tilefuse.remote_cache", "enabled"),
    "remote_get": ("tilefuse.remote_cache", "get"),
    "remote_put": ("tilefuse.remote_cache", "put"),
    "bump_counter": ("tilefuse.counters", "bump"),
    "ExternChoice": ("tilefuse.extern_gemm", "ExternChoice"),
    "GemmShape": ("tilefuse.gemm_shape", "GemmShape"),
    "GEMM_FLOAT_DTYPES": ("tilefuse.gemm_shape", "GEMM_FLOAT_DTYPES"),
    "gemm_majorness": ("tilefuse.gemm_shape", "majorness"),
    "gemm_matrix_strides": ("tilefuse.gemm_shape", "matrix_strides"),
    "tf32_matmuls": ("tilefuse.gemm_shape", "tf32_matmuls"),
    "set_tf32_matmuls": ("tilefuse.gemm_shape", "set_tf32_matmuls"),
}


def __getattr__(name: str) -> Any:
    if name in _HELPERS:
        import importlib

        module, attr = _HELPERS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'tilefuse.plugin' has no attribute {name!r}")


__all__ = [
    *_HELPERS,
    "API_VERSION",
    "KERNEL_SPEC_VERSION",
    "BufferSpec",
    "FusionQuery",
    "GroupKind",
    "KernelSpec",
    "Level",
    "MemberSpec",
    "R",
    "X",
    "BACKENDS_GROUP",
    "CAP_POINTWISE",
    "CAP_REDUCTION",
    "CAP_TEMPLATE_GEMM",
    "CAP_SPLIT_REDUCTIONS",
    "CAP_RANDOM",
    "CAP_SOFTMAX_SUM",
    "CHOICES_GROUP",
    "DEFAULT_DTYPES",
    "ENTRY_POINT_GROUPS",
    "SCHEDULING_GROUP",
    "SELECTORS_GROUP",
    "Availability",
    "BackendInfo",
    "Choice",
    "ChoiceProvider",
    "CompileContext",
    "CppLaunch",
    "DeviceBackend",
    "Epilogue",
    "EPILOGUE_KINDS",
    "EpilogueStep",
    "FusionCandidate",
    "GEMM_OPS",
    "Kernel",
    "KernelScheduling",
    "SchedulingPolicy",
    "Selected",
    "TemplateSelector",
    "TensorSpec",
    "Verdict",
    "dtype_from_name",
    "dtype_name",
]
