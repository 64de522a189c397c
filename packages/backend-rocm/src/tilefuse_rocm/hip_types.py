"""How each torch dtype is stored, loaded and stored back in the generated HIP C++.

Half-precision values are handled as raw 16-bit integers so the templates do not depend on
``hip/hip_bf16.h`` (absent from older HIP releases, e.g. Debian's 5.2); the conversion helpers
are defined in the template preamble (``tf_bf16_to_float``...).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DtypeInfo:
    """C++ spelling of one dtype: ``storage`` is the element type in memory."""

    name: str
    storage: str
    to_float: str  # format string with {v}
    from_float: str  # format string with {v}

    def load(self, expr: str) -> str:
        return self.to_float.format(v=expr)

    def store(self, expr: str) -> str:
        return self.from_float.format(v=expr)


_INFOS = {
    "float32": DtypeInfo("float32", "float", "({v})", "({v})"),
    "float16": DtypeInfo(
        "float16", "unsigned short", "tf_half_to_float({v})", "tf_float_to_half({v})"
    ),
    "bfloat16": DtypeInfo(
        "bfloat16", "unsigned short", "tf_bf16_to_float({v})", "tf_float_to_bf16({v})"
    ),
}


def dtype_info(name: str) -> DtypeInfo:
    """The ``DtypeInfo`` of a torch dtype name; ``KeyError`` names the supported ones."""
    try:
        return _INFOS[name]
    except KeyError:
        raise KeyError(f"dtype {name!r} is not supported; use one of {sorted(_INFOS)}") from None
