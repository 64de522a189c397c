"""The tiled Triton GEMM template, rendered as the text of a self-contained Python module.

``render_gemm`` returns source defining a ``@triton.jit`` kernel and a
``launch(*inputs, out=...)`` function. The compiler writes that text to its
debug directory and to the kernel cache; ``module_cache.load_module`` imports
it. The kernel:

- walks output tiles in grouped order (``GROUP_M`` row-tiles share a sweep over
  the columns, so their B tiles stay in L2);
- folds the batch of ``bmm`` into the 1-d grid (``program_id(0)``), so no grid
  axis limit applies; batch offsets are int64;
- wraps row/column indexes modulo M/N for the operand loads (no mask needed,
  and Triton still vectorises when M/N are multiples of 16) and masks the K
  tail unless ``EVEN_K``;
- accumulates in float32 with ``tl.dot`` (``input_precision`` "tf32" only when
  the config allows it for float32 inputs, else "ieee");
- applies the epilogue to the float32 tile, then casts to the output's dtype
  and stores with the M/N mask.

``vendor_first=True`` renders the other way to run a GEMM with an epilogue: the vendor
library's product (``torch.mm``/``torch.bmm``, cuBLAS on a GPU) writes ``out``, and the
kernel is one pass over it, loading each tile instead of computing it, then applying the
epilogue in place. That is what a graph runs when the epilogue is not fused into the
GEMM (the product rounded to the output's dtype before the epilogue, as eager does), so
autotuning measures it beside the fused configs: on an H200 the fused 4096x11008x4096
GELU took 0.60 ms against about 0.50 for cuBLAS and a separate pass (run
2026-12-01_1448).

Under Triton's interpreter, bfloat16 ``tl.dot`` multiplies the raw bit patterns
(triton-lang/triton#11584, "not supported yet"); interpreter kernels therefore
upcast bfloat16 tiles to float32 before the dot, which is exact.
"""

from __future__ import annotations

from collections.abc import Sequence

from tilefuse import plugin

from .config import GemmConfig
from .epilogue import render_steps
from .problem import GemmProblem, Unsupported

TEMPLATE_REVISION = 3  # bump when the rendered text changes meaning: enters provider.version


def kernel_name(op: str, config: GemmConfig, vendor_first: bool = False) -> str:
    """The stable name of a template instance, e.g. ``triton_mm_128x256x64_s4_w8_g8``
    (``triton_mm_vendor_then_64x128x16_s1_w4_g8`` for ``vendor_first``)."""
    return f"triton_{op}_{'vendor_then_' if vendor_first else ''}{config.tag()}"


def render_gemm(
    op: str,
    config: GemmConfig,
    epilogue: plugin.Epilogue,
    inputs: Sequence[plugin.TensorSpec],
    layout: plugin.TensorSpec,
    *,
    interpret: bool | None = None,
    name: str | None = None,
    vendor_first: bool = False,
) -> str:
    """Python source of one GEMM kernel with ``epilogue`` fused, for ``op`` on ``inputs``.

    ``op`` is ``"mm"``, ``"addmm"`` or ``"bmm"`` with the ``tilefuse.plugin.Choice``
    input conventions; ``inputs`` and ``layout`` describe the tensors (the source
    depends on their dtypes and broadcast patterns, not on sizes or strides,
    which are run-time arguments). ``interpret`` (default: ``layout`` is on the
    CPU) renders for Triton's interpreter. The module defines ``KERNEL``, ``OPTIONS``
    (launch options), ``arguments(*inputs, out)`` (the launch's grid, arguments and
    constexprs, from shapes and strides alone) and ``launch(*inputs, out)``; both take
    the op's tensors then the epilogue's operands. Raises ``problem.Unsupported`` when
    the template cannot serve it. ``vendor_first``: see the module docstring (then
    ``launch`` runs the vendor product first; ``KERNEL`` alone is only the pass).
    """
    problem = GemmProblem.of(op, inputs, layout, epilogue)
    if vendor_first and problem.dtype != problem.out_dtype:
        raise Unsupported("the vendor product writes the output in the inputs' dtype")
    if interpret is None:
        interpret = not layout.device.startswith("cuda")
    name = name or kernel_name(op, config, vendor_first)
    lines = [
        f'"""tilefuse Triton GEMM: {name}, template revision {TEMPLATE_REVISION}.',
        "",
        f"{op}: {problem.batch} x {problem.m} x {problem.n} x {problem.k}, "
        f"{problem.dtype} -> {problem.out_dtype}; epilogue: {_describe(problem)}",
        f"rendered for: {'the Triton interpreter' if interpret else 'a GPU'}",
        '"""',
        "",
        *(["import torch"] if vendor_first else []),
        "import triton",
        "import triton.language as tl",
        *(["from tilefuse_triton import device_math as dm"] if interpret else []),
        "",
        "",
    ]
    lines += _kernel(name, problem, config, interpret, vendor_first)
    lines += ["", "", f"KERNEL = {name}", "", ""]
    lines += _launcher(problem, config, vendor_first)
    return "\n".join(lines) + "\n"


def _stored(value: str, problem: GemmProblem, interpret: bool) -> str:
    """``value`` cast to the output's dtype. The interpreter's float32 -> bfloat16 cast
    truncates; ``device_math.to_bf16`` rounds to nearest even, as a GPU's cast does."""
    if interpret and problem.out_dtype == "bfloat16":
        return f"dm.to_bf16({value})"
    return f"{value}.to(out_ptr.dtype.element_ty)"


def _describe(problem: GemmProblem) -> str:
    kinds = [f"{s.kind}(e{s.operand})" if s.operand is not None else s.kind for s in problem.steps]
    return ", ".join(kinds) or "none"


def _extra_args(problem: GemmProblem) -> tuple[list[str], list[str]]:
    """(pointer names, stride names) of the epilogue's extra tensors."""
    batched = problem.op == "bmm"
    ptrs, strides = [], []
    for i in range(len(problem.extra_patterns)):
        ptrs.append(f"e{i}_ptr")
        strides += ([f"e{i}_sb"] if batched else []) + [f"e{i}_sm", f"e{i}_sn"]
    return ptrs, strides


def _kernel(
    name: str, problem: GemmProblem, config: GemmConfig, interpret: bool, vendor_first: bool
) -> list[str]:
    batched = problem.op == "bmm"
    ptrs, extra_strides = _extra_args(problem)
    sb = (lambda s: [s]) if batched else (lambda s: [])
    strides = (
        sb("stride_ab")
        + ["stride_am", "stride_ak"]
        + sb("stride_bb")
        + ["stride_bk", "stride_bn"]
        + sb("stride_ob")
        + ["stride_om", "stride_on"]
    )
    params = ["a_ptr", "b_ptr", "out_ptr", *ptrs, "M", "N", "K", *strides, *extra_strides]
    params += [
        "BLOCK_M: tl.constexpr",
        "BLOCK_N: tl.constexpr",
        "BLOCK_K: tl.constexpr",
        "GROUP_M: tl.constexpr",
        "EVEN_K: tl.constexpr",
    ]
    body = [
        "pid = tl.program_id(0)",
        "num_pid_m = tl.cdiv(M, BLOCK_M)",
        "num_pid_n = tl.cdiv(N, BLOCK_N)",
    ]
    if batched:
        body += [
            "tiles = num_pid_m * num_pid_n",
            "batch = (pid // tiles).to(tl.int64)",
            "pid = pid % tiles",
        ]
    body += [
        "# grouped ordering: GROUP_M row-tiles sweep the columns together (L2 reuse)",
        "pids_in_group = GROUP_M * num_pid_n",
        "first_pid_m = (pid // pids_in_group) * GROUP_M",
        "group_size_m = min(num_pid_m - first_pid_m, GROUP_M)",
        "pid_m = first_pid_m + ((pid % pids_in_group) % group_size_m)",
        "pid_n = (pid % pids_in_group) // group_size_m",
        "rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)",
        "rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)",
        "rk = tl.arange(0, BLOCK_K)",
    ]
    if problem.index_64:
        body += ["rm = rm.to(tl.int64)", "rn = rn.to(tl.int64)", "rk = rk.to(tl.int64)"]
    out_ptrs = (
        "out_ptrs = out_ptr"
        + (" + batch * stride_ob" if batched else "")
        + " + rm[:, None] * stride_om + rn[None, :] * stride_on"
    )
    out_mask = "out_mask = (rm < M)[:, None] & (rn < N)[None, :]"
    if vendor_first:  # the product is in ``out`` already: one pass over it
        load = "x = tl.load(out_ptrs, mask=out_mask, other=0.0).to(tl.float32)"
        body += [out_mask, out_ptrs, load]
    else:
        body += _main_loop(problem, config, interpret, batched) + [out_mask, "x = acc"]
    body += render_steps(problem.steps, problem.extra_patterns, batched)
    body += [] if vendor_first else [out_ptrs]
    body += [f"tl.store(out_ptrs, {_stored('x', problem, interpret)}, mask=out_mask)"]
    head = ["@triton.jit", f"def {name}("] + [f"    {p}," for p in params] + ["):"]
    return head + [f"    {line}" for line in body]


def _main_loop(
    problem: GemmProblem, config: GemmConfig, interpret: bool, batched: bool
) -> list[str]:
    """The K loop accumulating the tile's product into ``acc`` (float32)."""
    body = [
        "# rows/columns past the edge wrap around: their results are masked at the store",
        "ram = rm % M",
        "rbn = rn % N",
        "a_ptrs = a_ptr"
        + (" + batch * stride_ab" if batched else "")
        + " + ram[:, None] * stride_am + rk[None, :] * stride_ak",
        "b_ptrs = b_ptr"
        + (" + batch * stride_bb" if batched else "")
        + " + rk[:, None] * stride_bk + rbn[None, :] * stride_bn",
        "acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)",
        "for k in range(0, tl.cdiv(K, BLOCK_K)):",
        "    if EVEN_K:",
        "        a = tl.load(a_ptrs)",
        "        b = tl.load(b_ptrs)",
        "    else:",
        "        k_left = K - k * BLOCK_K",
        "        a = tl.load(a_ptrs, mask=rk[None, :] < k_left, other=0.0)",
        "        b = tl.load(b_ptrs, mask=rk[:, None] < k_left, other=0.0)",
    ]
    precision = "tf32" if (config.tf32 and problem.dtype == "float32") else "ieee"
    if interpret and problem.dtype == "bfloat16":
        body += [
            "    # the interpreter cannot tl.dot bfloat16 (triton#11584): float32 is exact here",
            "    a = a.to(tl.float32)",
            "    b = b.to(tl.float32)",
        ]
        precision = "ieee"
    if problem.dtype == "float32" or (interpret and problem.dtype == "bfloat16"):
        dot = f'tl.dot(a, b, acc, input_precision="{precision}", out_dtype=tl.float32)'
    else:
        dot = "tl.dot(a, b, acc, out_dtype=tl.float32)"
    return body + [
        f"    acc = {dot}",
        "    a_ptrs += BLOCK_K * stride_ak",
        "    b_ptrs += BLOCK_K * stride_bk",
    ]


def _launcher(problem: GemmProblem, config: GemmConfig, vendor_first: bool) -> list[str]:
    batched = problem.op == "bmm"
    n_extra = len(problem.extra_patterns)
    if problem.op == "addmm":
        args = ["e0", "a", "b"] + [f"e{i}" for i in range(1, n_extra)]
    else:
        args = ["a", "b"] + [f"e{i}" for i in range(n_extra)]
    params = ", ".join(args)
    lines = [
        f"OPTIONS = dict(num_warps={config.num_warps}, num_stages={config.num_stages})",
        "",
        "",
        f"def arguments({params}, *, out):",
        '    """``(grid, args, constexprs)`` of the launch writing ``out`` (``grid`` is',
        '    ``None`` when there is nothing to compute); reads only shapes and strides."""',
        "    M, N = out.shape[-2], out.shape[-1]",
        "    K = a.shape[-1]",
        "    batch = out.shape[0]" if batched else "    batch = 1",
        "    if M == 0 or N == 0 or batch == 0:",
        "        return None, (), {}",
        f"    tiles = triton.cdiv(M, {config.block_m}) * triton.cdiv(N, {config.block_n})",
        "    strides = (",
        "        *a.stride(), *b.stride(), *out.stride(),",
    ]
    for i in range(n_extra):
        lines.append(f"        *e{i}.expand(out.shape).stride(),")
    lines += [
        "    )",
        f"    args = (a, b, out, {''.join(f'e{i}, ' for i in range(n_extra))}M, N, K, *strides)",
        "    constexprs = dict(",
        f"        BLOCK_M={config.block_m},",
        f"        BLOCK_N={config.block_n},",
        f"        BLOCK_K={config.block_k},",
        f"        GROUP_M={config.group_m},",
        f"        EVEN_K=K % {config.block_k} == 0,",
        "    )",
        "    return (batch * tiles,), args, constexprs",
        "",
        "",
        f"def launch({params}, *, out):",
        '    """Run the kernel on the current stream, writing ``out``."""',
        *([f"    torch.{'bmm' if batched else 'mm'}(a, b, out=out)"] if vendor_first else []),
        f"    grid, args, constexprs = arguments({params}, out=out)",
        "    if grid is not None:",
        "        KERNEL[grid](*args, **constexprs, **OPTIONS)",
    ]
    return lines
