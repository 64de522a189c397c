"""Render one kernel spec (``tilefuse.plugin.KernelSpec``) into a Triton kernel's source text.

Kernel shapes:
- 1D pointwise: ``xindex`` is a ``[XBLOCK]`` vector;
- 2D (tiled pointwise, persistent or looped reduction): ``xindex`` is
  ``[XBLOCK, 1]`` and ``rindex`` ``[1, RBLOCK]``; per-row values are ``[XBLOCK, 1]``.

Every member is evaluated at its level (``plugin.Level``): a member read by another
member is taken from registers (per-row values) or recomputed inline at the same point
(per-element values; CSE makes that free inside one scope). Only the members in
``spec.stores`` are written to memory.

Symbolic sizes (``spec.symbolic``): every size symbol an index prints is a kernel
argument after ``rnumel`` (``KernelWriter.size_args``, sorted by name), never a
constant, and a mask is dropped only where a static extent is a multiple of the block.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import sympy
import torch

from tilefuse import plugin
from tilefuse.plugin import GroupKind, KernelSpec, Level, R, X

from . import ops_table

# Reductions computed online: a running row max and sums of exp(v - max) rescaled as
# the max grows (``ir.nodes.Reduction``).
ONLINE_KINDS = ("logsumexp", "softmax_sum")
# At most this many reductions share one loop over r: each holds a [XBLOCK, RBLOCK]
# accumulator in registers for the whole loop.
MAX_LOOP_BATCH = 4

TL_DTYPES = {
    torch.float32: "tl.float32", torch.float16: "tl.float16", torch.bfloat16: "tl.bfloat16",
    torch.float64: "tl.float64", torch.int64: "tl.int64", torch.int32: "tl.int32",
    torch.int16: "tl.int16", torch.int8: "tl.int8", torch.uint8: "tl.uint8", torch.bool: "tl.int1",
}  # fmt: skip
# Cache hint for loads every row of a reduction re-reads (see KernelWriter.load).
REUSED_LOAD_HINT = ", eviction_policy='evict_last'"


class IndexPrinter(plugin.IntegerExprPrinter):  # type: ignore[misc, name-defined]
    """sympy index expressions as Triton code over ``xindex`` / ``rindex`` (core's integer
    printer, with the index symbols named and powers spelled out)."""

    def _print_Symbol(self, expr: sympy.Symbol) -> str:
        if expr == X:
            return "xindex"
        if expr == R:
            return "rindex"
        return expr.name

    def _print_Pow(self, expr: Any) -> str:
        base, exp = expr.args
        if not (exp.is_Integer and exp > 0):
            raise ValueError(f"index {expr} has a power Triton code cannot express")
        return "(" + " * ".join([self._operand(base)] * int(exp)) + ")"


_printer = IndexPrinter()


def print_index(expr: Any) -> str:
    return _printer.doprint(expr)


SCALAR, PER_X, PER_XR = 0, 1, 2


class Var(str):
    """A kernel variable (or literal) with its dtype and shape kind.

    ``kind`` is ``SCALAR`` (one value for the whole program), ``PER_X`` (``[XBLOCK]`` in
    1D kernels, ``[XBLOCK, 1]`` in 2D ones) or ``PER_XR`` (``[XBLOCK, RBLOCK]``).
    ``runtime`` tells a ``SCALAR`` apart: True for a 0-d Triton tensor (a load at a
    constant index, or math on one), False for a literal or an expression of literals,
    which is a plain Python number inside the JIT. Non-scalar values are always runtime.
    """

    dtype: torch.dtype
    kind: int
    runtime: bool

    def __new__(cls, name: str, dtype: torch.dtype, kind: int, runtime: bool | None = None) -> Var:
        v = super().__new__(cls, name)
        v.dtype = dtype
        v.kind = kind
        v.runtime = kind != SCALAR if runtime is None else runtime
        return v

    @property
    def per_r(self) -> bool:
        return self.kind == PER_XR


def kind_of(*values: Any) -> int:
    return max((getattr(v, "kind", SCALAR) for v in values), default=SCALAR)


class KernelWriter:
    """Builds the source of one kernel. ``render()`` returns ``(source, arg_names)``."""

    def __init__(self, spec: KernelSpec, config: dict) -> None:
        self.spec = spec
        self.buffers = spec.buffers
        self.name = spec.name
        self.config = config
        self.two_d = spec.kind is not GroupKind.POINTWISE
        self.persistent = bool(config.get("persistent", not spec.is_reduction))
        self.lines: list[str] = []
        self.indent = 1
        self.cse: list[dict[str, Var]] = [{}]
        self.values: list[dict[str, Var]] = [{}]
        self.masks: list[str] = []
        self.mask_kinds: list[int] = []
        self.counter = 0
        self.in_args: dict[str, str] = {}
        self.out_args: dict[str, str] = {}
        self.member_names = set(spec.names)
        self.xnumel_divides = _divides(spec.xnumel, int(config["XBLOCK"]))
        self.rnumel_divides = _divides(spec.rnumel, int(config.get("RBLOCK", 1)))
        self.size_symbols: set[str] = set()  # size symbols the source uses (arguments)

    def print_index(self, expr: Any) -> str:
        """``expr`` as kernel code, noting the size symbols it uses (kernel arguments)."""
        for sym in sympy.sympify(expr).free_symbols:
            if plugin.is_size_symbol(sym):
                self.size_symbols.add(sym.name)
        return print_index(expr)

    @property
    def size_args(self) -> list[str]:
        """The size symbols this kernel takes after ``rnumel``, in order."""
        return sorted(self.size_symbols)

    # -- emission helpers ------------------------------------------------------------
    def emit(self, line: str) -> None:
        self.lines.append("    " * self.indent + line)

    def new_var(self, expr: str, dtype: torch.dtype, kind: int) -> Var:
        """A temporary holding ``expr`` (a Triton value at run time, 0-d when ``SCALAR``)."""
        for scope in reversed(self.cse):
            if expr in scope:
                return scope[expr]
        self.counter += 1
        var = Var(f"tmp{self.counter}", dtype, kind, runtime=True)
        self.emit(f"{var} = {expr}")
        self.cse[-1][expr] = var
        return var

    def push_scope(self) -> None:
        self.cse.append({})
        self.values.append({})

    def pop_scope(self) -> None:
        self.cse.pop()
        self.values.pop()

    def lookup_value(self, name: str) -> Var | None:
        for scope in reversed(self.values):
            if name in scope:
                return scope[name]
        return None

    def arg_for_load(self, name: str) -> str:
        if name in self.out_args:
            return self.out_args[name]
        if name not in self.in_args:
            self.in_args[name] = f"in_ptr{len(self.in_args)}"
        return self.in_args[name]

    def shaped(self, value: Var, kind: int) -> str:
        """``value`` as text broadcast to the full shape of ``kind``."""
        if not self.two_d:
            kind = min(kind, PER_X)
        if kind == SCALAR or value.kind == kind or (not self.two_d and value.kind > SCALAR):
            return str(value)
        if kind == PER_XR:
            shape = "[XBLOCK, RBLOCK]"
        else:
            shape = "[XBLOCK, 1]" if self.two_d else "[XBLOCK]"
        if value.kind == SCALAR:
            if _is_literal(value):
                return f"tl.full({shape}, {value}, {TL_DTYPES[value.dtype]})"
            return f"(tl.zeros({shape}, {TL_DTYPES[value.dtype]}) + {value})"
        return f"tl.broadcast_to({value}, {shape})"

    def emit_mask(self, name: str, bound_check: str, always_true: bool, shape: str) -> None:
        """Define mask ``name``: a constant all-true mask when the block size divides the
        extent (reductions' ``tl.where`` still names it; loads and stores then take no mask
        at all, see ``mask_for``)."""
        if always_true:
            self.emit(f"{name} = tl.full({shape}, 1, tl.int1)")
        else:
            self.emit(f"{name} = {bound_check}")

    def mask_for(self, per_r: bool, conditions: bool = True) -> str:
        """The mask of a load or store (with the enclosing ``masked`` conditions unless
        ``conditions`` is false); empty when it is known all-true (no mask at all is what
        Inductor emits there, and leaves Triton nothing to fold)."""
        per_r = per_r and self.two_d
        base = "xmask & rmask" if per_r else "xmask"
        true = self.xnumel_divides and (self.rnumel_divides or not per_r)
        parts = ([] if true else [base]) + [f"({m})" for m in self.masks if conditions]
        return " & ".join(parts)

    def _unconditional(self, expr: Any, buf: plugin.BufferSpec) -> bool:
        """Whether a load of ``buf`` at ``expr`` inside a condition may drop it: ``buf``
        is broadcast (at most a quarter as many elements as the kernel has lanes, so the
        lanes the condition would have skipped re-read cached elements; a concatenated
        slice of a wide buffer is not, and keeps its condition rather than read the rest
        of each row) and ``expr`` addresses an element of it for every ``x < xnumel`` and
        ``r < rnumel``."""
        if buf.offset != 0 or any(s == 0 for s in buf.size):
            return False
        last = sum(((s - 1) * st for s, st in zip(buf.size, buf.stride)), sympy.Integer(0))
        lanes = self.spec.xnumel * self.spec.rnumel
        try:
            broadcast = 4 * (int(last) + 1) <= int(lanes)
        except TypeError:  # symbolic sizes: not shown
            return False
        if any(plugin.is_size_symbol(sym) for sym in expr.free_symbols):
            return False  # a symbol of an int argument may be negative: not shown
        ranges = {X: self.spec.xnumel, R: self.spec.rnumel}
        return broadcast and plugin.provably_within(expr, ranges, last)

    # -- ops handler (called by IR bodies) -------------------------------------------
    def load(self, name: str, index: Any) -> Var:
        if name in self.member_names:
            return self.member_value(name)
        buf = self.buffers[name]
        expr = self.spec.simplify(index)
        kind = SCALAR
        for sym in expr.free_symbols:
            if sym == R:
                kind = max(kind, PER_XR)
            elif sym == X:
                kind = max(kind, PER_X)
            elif not plugin.is_size_symbol(sym):  # a size is one value for every program
                kind = max(kind, getattr(self.indirect_vars.get(sym.name), "kind", PER_XR))
        # Under a condition (a padded window's bounds), a load of a broadcast buffer whose
        # address is in the buffer for every x and r needs no mask: the condition's
        # ``tl.where`` picks the value. Unmasked, the loads of a per-channel parameter in
        # a pooling window's nine conditions are one load, and the math on them is shared
        # (CSE).
        guarded = bool(self.masks) and not self._unconditional(expr, buf)
        if guarded:
            kind = max([kind] + self.mask_kinds)
        ptr = self.arg_for_load(name)
        text = self.print_index(expr)
        if kind == SCALAR:
            load = f"tl.load({ptr} + ({text}))"
        else:
            hint = REUSED_LOAD_HINT if self._reread_by_every_row(expr) else ""
            mask = self.mask_for(kind == PER_XR, guarded)
            masked = f", {mask}, other=0" if mask else ""
            if mask:
                text = self._offset_for_mask(expr, text, kind)
            load = f"tl.load({ptr} + ({text}){masked}{hint})"
        return self.new_var(load, buf.dtype, kind)

    def _offset_for_mask(self, expr: Any, text: str, kind: int) -> str:
        """A load offset broadcast to the shape of its mask: Triton broadcasts a mask to
        its pointer's shape, never a pointer to its mask's (a constant index read under a
        per-row condition, e.g. ``stack`` of 0-d tensors, would be a scalar pointer)."""
        has_x = has_r = False
        for sym in expr.free_symbols:
            if sym == X:
                has_x = True
            elif sym == R:
                has_r = True
            elif not plugin.is_size_symbol(sym):
                sym_kind = getattr(self.indirect_vars.get(sym.name), "kind", PER_XR)
                has_x = has_x or sym_kind >= PER_X
                has_r = has_r or sym_kind == PER_XR
        if not has_x:
            text = f"{text} + 0 * xindex"
        if kind == PER_XR and self.two_d and not has_r:
            text = f"{text} + 0 * rindex"
        return text

    def _reread_by_every_row(self, expr: Any) -> bool:
        """True for a reduction's load indexed by ``r`` alone (a layer_norm weight, say):
        every program reads the same elements, so they should stay in L2."""
        return self.spec.is_reduction and expr.free_symbols == {R}

    indirect_vars: dict[str, Var]

    def indirect(self, value: Var, size: Any) -> sympy.Symbol:
        v = self.new_var(f"tl.where({value} < 0, {value} + {self.print_index(size)}, {value})",
                         value.dtype, value.kind)  # fmt: skip
        self.indirect_vars[str(v)] = v
        return sympy.Symbol(str(v), integer=True)

    def constant(self, value: Any, dtype: torch.dtype) -> Var:
        return Var(ops_table.constant(value, dtype), dtype, SCALAR)

    def index_expr(self, expr: Any, dtype: torch.dtype) -> Var:
        e = self.spec.simplify(expr)
        text = self.print_index(e)
        if not e.free_symbols:
            return Var(ops_table.constant(int(e), dtype), dtype, SCALAR)
        if all(plugin.is_size_symbol(s) for s in e.free_symbols):  # a size: one per program
            size = self.new_var(f"({text}).to(tl.int64)", torch.int64, SCALAR)
            return self.to_dtype(size, dtype)
        kind = PER_XR if R in e.free_symbols else PER_X
        if not e.has(X) and kind == PER_X:
            kind = PER_XR  # an expression of indirect symbols only
        if dtype == torch.bfloat16:  # rounded by to_dtype, not truncated by the interpreter
            return self.to_dtype(
                self.new_var(f"({text}).to(tl.float32)", torch.float32, kind), dtype
            )
        return self.new_var(f"({text}).to({TL_DTYPES[dtype]})", dtype, kind)

    @property
    def one_block(self) -> str:
        """The shape of a one-element block of this kernel's rank (blocks of different
        ranks do not broadcast in Triton)."""
        return "[1, 1]" if self.two_d else "[1]"

    def to_dtype(self, value: Var, dtype: torch.dtype) -> Var:
        """``value`` converted as torch converts: floats round to nearest even, floats
        to ints truncate toward zero, anything to bool is ``!= 0`` (NaN is True)."""
        if getattr(value, "dtype", None) == dtype:
            return value
        if value.kind == SCALAR and _is_literal(value):
            if dtype == torch.bool:
                return Var(f"({value} != 0)", dtype, SCALAR)
            return Var(ops_table.constant(_literal(value), dtype), dtype, SCALAR)
        if value.kind == SCALAR and not value.runtime:
            # A folded constant expression is a Python number inside the JIT: give it a type.
            value = self.new_var(f"tl.full({self.one_block}, {value}, {TL_DTYPES[value.dtype]})",
                                 value.dtype, PER_X)  # fmt: skip
        if dtype == torch.bool:
            return self.new_var(f"({value} != 0)", dtype, value.kind)
        if value.dtype == torch.bfloat16:
            value = self.new_var(f"dm.from_bf16({value})", torch.float32, value.kind)
            if dtype == torch.float32:
                return value
        if dtype in (torch.bfloat16, torch.float16) and value.dtype != torch.float32:
            # Through float32 first, as c10's Half/BFloat16 constructors do (float64 is
            # rounded twice there too); int/bool -> bf16 also needs it in the interpreter.
            value = self.new_var(f"{value}.to(tl.float32)", torch.float32, value.kind)
        if dtype == torch.bfloat16 and value.dtype == torch.float32:
            return self.new_var(f"dm.to_bf16({value})", dtype, value.kind)
        return self.new_var(f"{value}.to({TL_DTYPES[dtype]})", dtype, value.kind)

    def rand(self, seed: Var, offset: Var) -> Var:
        """``plugin.CAP_RANDOM``'s op: Triton's Philox ``tl.rand`` (float32 in [0, 1)).
        A literal offset (a one-element tensor's 0) becomes a block: ``tl.rand`` casts it."""
        if offset.kind == SCALAR and _is_literal(offset):
            offset = self.new_var(f"tl.full({self.one_block}, {offset}, tl.int64)", torch.int64,
                                  PER_X)  # fmt: skip
        return self.new_var(f"tl.rand({seed}, {offset})", torch.float32, max(offset.kind, PER_X))

    def where(self, cond: Var, a: Var, b: Var) -> Var:
        dtype = a.dtype if isinstance(a, Var) else b.dtype
        kind = kind_of(cond, a, b)
        return self.new_var(f"tl.where({cond}, {a}, {b})", dtype, max(kind, PER_X))

    def masked(self, cond: Var, body: Callable[[], Any], other: Any) -> Var:
        self.masks.append(str(cond))
        self.mask_kinds.append(cond.kind)
        try:
            value = body()
        finally:
            self.masks.pop()
            self.mask_kinds.pop()
        other_text = ops_table.constant(other, value.dtype)
        kind = max(kind_of(value, cond), PER_X)
        return self.new_var(f"tl.where({cond}, {value}, {other_text})", value.dtype, kind)

    def __getattr__(self, name: str) -> Callable[..., Var]:
        if name not in plugin.OP_NAMES:
            raise AttributeError(name)
        template = ops_table.template(name)

        def op(*args: Var) -> Var:
            dtype = ops_table.result_dtype(name, args)
            kind = kind_of(*args)
            if kind == SCALAR and any(getattr(a, "runtime", False) for a in args):
                return self.new_var(template(*args), dtype, SCALAR)
            if kind == SCALAR and name == "truediv":
                # Triton folds literal arithmetic in Python, where 0.0 / 0.0 raises.
                first = Var(f"tl.full({self.one_block}, {args[0]}, {TL_DTYPES[args[0].dtype]})",
                            args[0].dtype, PER_X)  # fmt: skip
                return self.new_var(template(first, *args[1:]), dtype, PER_X)
            if kind == SCALAR:
                return Var(template(*args), dtype, SCALAR)
            return self.new_var(template(*args), dtype, kind)

        return op

    # -- members ---------------------------------------------------------------------
    def member_value(self, name: str) -> Var:
        value = self.lookup_value(name)
        if value is not None:
            return value
        if self.spec.member(name).level is not Level.PER_XR:
            raise AssertionError(f"{name} read before it is computed")
        return self.eval_pointwise(name)

    def eval_pointwise(self, name: str) -> Var:
        value = self.spec.member(name).compute()
        self.values[-1][name] = value
        return value

    def store(self, name: str, value: Var) -> None:
        buf = self.buffers[name]
        member = self.spec.member(name)
        index_expr = self.spec.simplify(member.store_index)
        index = self.print_index(index_expr)
        ptr = self.out_args.setdefault(name, f"out_ptr{len(self.out_args)}")
        per_r = member.level is Level.PER_XR and self.two_d
        if per_r and R not in index_expr.free_symbols:
            index += " + 0 * rindex"
        if X not in index_expr.free_symbols:
            index += " + 0 * xindex"
        if value.dtype != buf.dtype:
            value = self.to_dtype(value, buf.dtype)
        text = self.shaped(value, PER_XR if per_r else PER_X)
        mask = self.mask_for(per_r)
        self.emit(f"tl.store({ptr} + ({index}), {text}{', ' + mask if mask else ''})")

    # -- reductions ------------------------------------------------------------------
    def eval_reduction_input(self, name: str) -> Var:
        value = self.spec.member(name).compute()
        if not value.per_r:
            value = self.new_var(self.shaped(value, PER_XR), value.dtype, PER_XR)
        return value

    def reduction(self, name: str) -> Var:
        """A persistent kernel's reduction: the whole row is in registers."""
        member, kind, acc_dtype, init = self._accumulator(name)
        if kind in ONLINE_KINDS:
            return self.online_persistent(name, kind, member.src_dtype)
        masked = self.masked_input(name, kind, acc_dtype, init)
        if kind in ("argmax", "argmin"):
            return self.finish_arg(kind, masked, self.rindex_i32())
        return self.finish_reduction(kind, masked, acc_dtype)

    def looped_reductions(self, names: list[str]) -> None:
        """The reductions ``names`` of a looped kernel in one loop over r (their inputs
        read once, shared by CSE), each value recorded under its name."""
        accs = [self.begin_looped(name) for name in names]
        self.open_r_loop()
        for name, acc in zip(names, accs, strict=True):
            self.step_looped(name, acc)
        self.close_r_loop()
        for name, acc in zip(names, accs, strict=True):
            self.values[-1][name] = self.finish_looped(name, acc)

    def _accumulator(self, name: str) -> tuple[Any, str, torch.dtype, str]:
        """``(member, reduction type, accumulator dtype, its initial value)`` of reduction
        ``name`` (no initial value, ``""``, for the online kinds: they keep a max and a
        sum, ``begin_looped``)."""
        member = self.spec.member(name)
        kind = member.reduction_type
        assert kind is not None, f"{name} is not a reduction"
        acc_dtype = torch.int8 if kind == "any" else member.src_dtype
        init = "" if kind in ONLINE_KINDS else ops_table.reduction_init(kind, acc_dtype)
        return member, kind, acc_dtype, init

    def begin_looped(self, name: str) -> str:
        member, kind, acc_dtype, init = self._accumulator(name)
        self.counter += 1
        acc = f"acc{self.counter}"
        if kind in ONLINE_KINDS:
            tl_t = TL_DTYPES[member.src_dtype]
            self.emit(f'{acc}_m = tl.full([XBLOCK, 1], float("-inf"), {tl_t})')
            self.emit(f"{acc}_s = tl.zeros([XBLOCK, RBLOCK], {tl_t})")
            return acc
        self.emit(f"{acc} = tl.full([XBLOCK, RBLOCK], {init}, {TL_DTYPES[acc_dtype]})")
        if kind in ("argmax", "argmin"):
            self.emit(f"{acc}_idx = tl.full([XBLOCK, RBLOCK], 2147483647, tl.int32)")
        return acc

    def step_looped(self, name: str, acc: str) -> None:
        member, kind, acc_dtype, init = self._accumulator(name)
        if kind in ONLINE_KINDS:
            # The running max is one per row (a block max each step), so the running sums
            # are rescaled by one exp per row and step, not one per element. An infinite
            # max decides the result alone; the sums then need not stay finite.
            ninf = 'float("-inf")'
            v = self.new_var(f"tl.where(xmask & rmask, {self.eval_reduction_input(name)}, {ninf})",
                             member.src_dtype, PER_XR)  # fmt: skip
            self.emit(f"{acc}_new = dm.max_nan({acc}_m, tl.reduce({v}, 1, dm.max_nan)[:, None])")
            self.emit(f'{acc}_safe = tl.where(tl.abs({acc}_new) == float("inf"), 0.0, {acc}_new)')
            self.emit(
                f"{acc}_s = {acc}_s * tl.exp({acc}_m - {acc}_safe) + tl.exp({v} - {acc}_safe)"
            )
            self.emit(f"{acc}_m = {acc}_new")
            return
        masked = self.masked_input(name, kind, acc_dtype, init)
        if kind in ("argmax", "argmin"):
            ridx = self.rindex_i32()
            self.emit(f"{acc}, {acc}_idx = dm.{kind}_combine({acc}, {acc}_idx, {masked}, {ridx})")
        else:
            self.emit(f"{acc} = {ops_table.reduction_combine(kind, acc, masked)}")

    def finish_looped(self, name: str, acc: str) -> Var:
        member, kind, acc_dtype, _ = self._accumulator(name)
        if kind in ONLINE_KINDS:
            total = self.new_var(f"tl.sum({acc}_s, 1)[:, None]", member.src_dtype, PER_X)
            return self.finish_online(kind, f"{acc}_m", total, member.src_dtype)
        if kind in ("argmax", "argmin"):
            return self.finish_arg(kind, Var(acc, acc_dtype, PER_XR), f"{acc}_idx")
        return self.finish_reduction(kind, Var(acc, acc_dtype, PER_XR), acc_dtype)

    def loop_batch(self, position: int) -> list[str]:
        """The reduction at ``position`` of a looped kernel and every later one that can
        share its loop over r: one that needs no value computed at or after
        ``position`` but inline (per-element) ones. ``softmax_sum`` next to the ``max``
        of the same row is the case this is for: one read of the row, not two."""
        members = self.spec.members
        later = {m.name for m in members[position:] if m.level is not Level.PER_XR}
        batch = [members[position].name]
        for m in members[position + 1 :]:
            if len(batch) == MAX_LOOP_BATCH:
                break
            done = self.lookup_value(m.name) is not None  # by an earlier loop
            if m.level is Level.REDUCED and not done and not (self.needs(m.name) & later):
                batch.append(m.name)
        return batch

    def needs(self, name: str) -> set[str]:
        """The members ``name``'s value is computed from, directly or through others."""
        found: set[str] = set()
        stack = [name]
        while stack:
            for buf, _ in self.spec.member(stack.pop()).reads:
                if buf in self.member_names and buf not in found:
                    found.add(buf)
                    stack.append(buf)
        return found

    def masked_input(self, name: str, kind: str, acc_dtype: torch.dtype, init: str) -> Var:
        """The reduction's input at the current r block, with masked lanes set to ``init``."""
        value = self.eval_reduction_input(name)
        if kind == "any":
            value = self.new_var(f"{value}.to(tl.int8)", torch.int8, PER_XR)
        return self.new_var(f"tl.where(xmask & rmask, {value}, {init})", acc_dtype, PER_XR)

    def rindex_i32(self) -> Var:
        return self.new_var("tl.broadcast_to(rindex, [XBLOCK, RBLOCK]).to(tl.int32)",
                            torch.int32, PER_XR)  # fmt: skip

    def finish_arg(self, kind: str, values: str, indices: str) -> Var:
        """Per-row index of the max/min (first one on ties; NaN counts as largest)."""
        self.counter += 1
        out = f"tmp{self.counter}"
        self.emit(f"_, {out} = tl.reduce(({values}, {indices}), 1, dm.{kind}_combine)")
        return self.new_var(f"{out}[:, None].to(tl.int64)", torch.int64, PER_X)

    def online_persistent(self, name: str, kind: str, dtype: torch.dtype) -> Var:
        """``logsumexp`` or ``softmax_sum`` of a row held in registers."""
        ninf = 'float("-inf")'
        v = self.new_var(f"tl.where(xmask & rmask, {self.eval_reduction_input(name)}, {ninf})",
                         dtype, PER_XR)  # fmt: skip
        m = self.new_var(f"tl.reduce({v}, 1, dm.max_nan)[:, None]", dtype, PER_X)
        ms = self.new_var(f'tl.where(tl.abs({m}) == float("inf"), 0.0, {m})', dtype, PER_X)
        total = self.new_var(f"tl.sum(tl.exp({v} - {ms}), 1)[:, None]", dtype, PER_X)
        return self.finish_online(kind, str(m), total, dtype)

    def finish_online(self, kind: str, m: str, total: Var, dtype: torch.dtype) -> Var:
        """From a row's max ``m`` and its sum of ``exp(v - m)`` (``m`` taken as 0 where
        infinite): ``logsumexp`` as ``torch.logsumexp`` (a row whose max is +-inf gives
        that max, NaN propagates); ``softmax_sum`` as eager's ``sum(exp(x - amax))``
        (NaN where the max is not finite: inf - inf)."""
        if kind == "softmax_sum":
            finite = f'tl.abs({m}) != float("inf")'
            return self.new_var(f'tl.where({finite}, {total}, float("nan"))', dtype, PER_X)
        ms = self.new_var(f'tl.where(tl.abs({m}) == float("inf"), 0.0, {m})', dtype, PER_X)
        return self.new_var(f"tl.where({ms} != {m}, {m}, {ms} + tl.log({total}))", dtype, PER_X)

    def finish_reduction(self, kind: str, value: Var, acc_dtype: torch.dtype) -> Var:
        text = ops_table.reduction_final(kind, value)
        out_dtype = torch.bool if kind == "any" else acc_dtype
        return self.new_var(f"{text}[:, None]" if kind != "any" else f"({text} > 0)[:, None]",
                            out_dtype, PER_X)  # fmt: skip

    def open_r_loop(self) -> None:
        self.emit("for roffset in range(0, rnumel, RBLOCK):")
        self.indent += 1
        self.push_scope()
        self.emit("rindex = roffset + tl.arange(0, RBLOCK)[None, :]")
        self.emit_mask("rmask", "rindex < rnumel", self.rnumel_divides, "[1, RBLOCK]")

    def close_r_loop(self) -> None:
        self.pop_scope()
        self.indent -= 1

    # -- whole kernel ----------------------------------------------------------------
    def render(self) -> tuple[str, list[str]]:
        self.indirect_vars = {}
        spec = self.spec
        tiled = spec.kind is GroupKind.POINTWISE_2D
        index_type = "tl.int64" if self.config.get("int64") else None
        # With 64-bit indices the program id is widened before it is scaled: the product of
        # two int32 values (pid * XBLOCK) wraps past 2**31 elements before any later cast.
        pid_expr = f"tl.program_id(0).to({index_type})" if index_type else "tl.program_id(0)"
        if self.two_d:
            if tiled and self.config.get("paired"):
                # Square tile grid: tiles (a, b) and (b, a) run back to back, so the
                # transposed read of one is the L2-resident direct read of the other.
                # Shell k holds the 2k+1 tiles with max(a, b) == k and starts at pid k*k.
                self.emit("pid = tl.program_id(0)")
                self.emit("k = tl.sqrt(pid.to(tl.float32)).to(tl.int32)")
                self.emit("k = tl.where((k + 1) * (k + 1) <= pid, k + 1, k)")
                self.emit("k = tl.where(k * k > pid, k - 1, k)")
                self.emit("m = pid - k * k")
                self.emit("t = m // 2")
                self.emit("xtile = tl.where(m == 2 * k, k, tl.where(m % 2 == 0, t, k))")
                self.emit("rtile = tl.where(m == 2 * k, k, tl.where(m % 2 == 0, k, t))")
                wide = f".to({index_type})" if index_type else ""
                self.emit(f"xoffset = xtile{wide} * XBLOCK")
                self.emit(f"roffset = rtile{wide} * RBLOCK")
            elif tiled:
                self.emit(f"pid = {pid_expr}")
                self.emit("rblocks = tl.cdiv(rnumel, RBLOCK)")
                self.emit("xoffset = (pid // rblocks) * XBLOCK")
                self.emit("roffset = (pid % rblocks) * RBLOCK")
            else:
                self.emit(f"xoffset = {pid_expr} * XBLOCK")
                self.emit("roffset = 0")
            cast = f".to({index_type})" if index_type else ""
            self.emit(f"xindex = (xoffset + tl.arange(0, XBLOCK)[:, None]){cast}")
            self.emit_mask("xmask", "xindex < xnumel", self.xnumel_divides, "[XBLOCK, 1]")
            if self.persistent:
                self.emit(f"rindex = (roffset + tl.arange(0, RBLOCK)[None, :]){cast}")
                self.emit_mask("rmask", "rindex < rnumel", self.rnumel_divides, "[1, RBLOCK]")
        else:
            cast = f".to({index_type})" if index_type else ""
            self.emit(f"xindex = ({pid_expr} * XBLOCK + tl.arange(0, XBLOCK)){cast}")
            self.emit_mask("xmask", "xindex < xnumel", self.xnumel_divides, "[XBLOCK]")
        stores = set(spec.stores)
        with plugin.ops_handler(self):
            for position, member in enumerate(spec.members):
                name = member.name
                if member.level is Level.REDUCED:
                    if self.persistent:
                        self.values[-1][name] = self.reduction(name)
                    elif self.lookup_value(name) is None:  # not computed by an earlier loop
                        self.looped_reductions(self.loop_batch(position))
                    if name in stores:
                        self.store(name, self.values[-1][name])
                elif member.level is Level.PER_XR and self.two_d and not self.persistent:
                    if name in stores:
                        self.open_r_loop()
                        self.store(name, self.eval_pointwise(name))
                        self.close_r_loop()
                else:
                    if member.level is Level.PER_XR and name not in stores:
                        continue  # computed inline where it is read
                    value = self.eval_pointwise(name)
                    if name in stores:
                        self.store(name, value)
        if self.two_d and not self.persistent:
            self.lines = hint_rereads(self.lines)
        args = list(self.in_args.values()) + list(self.out_args.values())
        names = list(self.in_args) + list(self.out_args)
        self.print_index(spec.xnumel)  # extents computed from symbols need them passed
        self.print_index(spec.rnumel)
        sizes = "".join(f"{s}, " for s in self.size_args)
        header = (
            f"@triton.jit\ndef {self.name}({', '.join(args)}, xnumel, rnumel, {sizes}"
            "XBLOCK: tl.constexpr, RBLOCK: tl.constexpr):\n"
        )
        source = (
            "import triton\nimport triton.language as tl\n"
            "from tilefuse_triton import device_math as dm\n\n\n"
            + header
            + "\n".join(self.lines)
            + "\n"
        )
        return source, names


_LOOP_HEAD = "for roffset in range("
_LOAD = re.compile(r"^(\s*tmp\d+ = )(tl\.load\(.*\))$")


def hint_rereads(lines: list[str]) -> list[str]:
    """``lines`` of a looped reduction kernel with cache hints on the loads that several
    ``r`` loops repeat (a norm reads its row once for the statistics, again to normalize):
    ``evict_last`` where the row is read again later, ``evict_first`` at its last read, so
    the second pass finds the row in L2. Loads already hinted are left alone."""
    loop = -1
    seen: dict[str, list[tuple[int, int]]] = {}  # load text -> (line, loop) of each read
    for i, line in enumerate(lines):
        if line.lstrip().startswith(_LOOP_HEAD):
            loop += 1
            continue
        match = _LOAD.match(line)
        if loop >= 0 and match and "eviction_policy" not in line:
            seen.setdefault(match.group(2), []).append((i, loop))
    out = list(lines)
    for reads in seen.values():
        if len({loop for _, loop in reads}) < 2:
            continue
        last = reads[-1][1]
        for i, loop in reads:
            policy = "evict_first" if loop == last else "evict_last"
            out[i] = f"{lines[i][:-1]}, eviction_policy='{policy}')"
    return out


def render_spec(spec: KernelSpec, config: dict) -> tuple[str, list[str], list[str]]:
    """Source text of kernel ``spec.name``, its argument buffer names (inputs, then
    outputs) and the size symbols it takes after ``rnumel`` (empty unless
    ``spec.symbolic``), for ``spec`` under ``config`` (``heuristics.choose_config``'s keys)."""
    writer = KernelWriter(spec, config)
    source, names = writer.render()
    return source, names, writer.size_args


def _divides(extent: Any, block: int) -> bool:
    """True when ``extent`` is a multiple of ``block`` for every value of its symbols."""
    extent = sympy.sympify(extent)
    if extent.is_Integer:
        return int(extent) % block == 0
    return False


def _is_literal(text: str) -> bool:
    try:
        _literal(text)
    except ValueError:
        return False
    return True


def _literal(text: str) -> Any:
    if text.startswith("float("):
        return float(text[7:-2])
    return float(text) if any(c in text for c in ".en") else int(text)


__all__ = ["render_spec", "print_index", "Sequence"]
