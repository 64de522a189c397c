"""Corrections to Triton's interpreter (``TRITON_INTERPRET=1``), applied on import.

The interpreter is CI's correctness gate for generated kernels, so where it computes
differently from a GPU, generated code that is right on the GPU fails on CPU. Each fix
makes the interpreter do what the compiled kernel does; none changes GPU behaviour.

- Comparisons (``a < b``, ``a == b`` ...) return handles typed like their operands
  (``fp32``) instead of ``int1``. Broadcasting such a 0-d result (a compare of a value
  loaded at a constant index) then fills a float array, and ``block_bool & it`` raises
  ``TypeError: ufunc 'bitwise_and' not supported``. The fix types every result ``int1``.
"""

from __future__ import annotations

import numpy as np
import triton.language as tl

_COMPARE_OPS = [
    f"create_{kind}cmp{cond}"
    for kind, conds in (
        ("i", ("SLE", "SLT", "SGE", "SGT", "ULE", "ULT", "UGE", "UGT", "EQ", "NE")),
        ("f", ("OLT", "OGT", "OLE", "OGE", "OEQ", "ONE", "ULT", "UGT", "ULE", "UGE", "UEQ", "UNE")),
    )
    for cond in conds
]


def _typed_int1(compare):
    def create(self, lhs, rhs):
        from triton.runtime.interpreter import TensorHandle

        out = compare(self, lhs, rhs)
        return TensorHandle(np.asarray(out.data, dtype=np.bool_), tl.int1)

    create._tilefuse_fixed = True
    return create


def apply() -> None:
    """Patch the interpreter's builder once (idempotent)."""
    from triton.runtime.interpreter import InterpreterBuilder

    for name in _COMPARE_OPS:
        compare = getattr(InterpreterBuilder, name, None)
        if compare is not None and not getattr(compare, "_tilefuse_fixed", False):
            setattr(InterpreterBuilder, name, _typed_int1(compare))
