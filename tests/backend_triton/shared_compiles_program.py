"""Run by ``test_shared_compiles.py`` in a fresh interpreter: compile one small kernel for
an sm90 target (no GPU needed: Triton's own ptxas) inside ``shared_compiles(KEY)``, ``N``
times (argv[1]), and print one JSON line: tilefuse's counters, the compile hash and the
SHA-256 of the cubin. A fresh interpreter because Triton's interpreter, once it has run in a
process, patches ``triton.language`` so that a real compile fails there. Prints
``{"skip": reason}`` where Triton cannot compile for sm90 here. The caller sets
TRITON_CACHE_DIR, TILEFUSE_CACHE_DIR and TILEFUSE_REMOTE_CACHE.
"""

from __future__ import annotations

import hashlib
import json
import sys

import triton
import triton.language as tl

import tilefuse
from tilefuse_triton.shared_compiles import compile_key, shared_compiles

KEY = compile_key("def add_one(...): ...", "fp32", 128)


def add_one(x_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + i, tl.load(x_ptr + i, mask=i < n) + 1, mask=i < n)


def compile_once():
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    signature = {"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"}
    src = ASTSource(JITFunction(add_one), signature=signature, constexprs={"BLOCK": 128})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32))


def main() -> None:
    kernel = None
    try:
        for _ in range(int(sys.argv[1])):
            with shared_compiles(KEY):
                kernel = compile_once()
    except Exception as error:  # noqa: BLE001 (any reason Triton cannot build here)
        print(json.dumps({"skip": f"Triton cannot compile for sm90 here: {error}"[:300]}))
        return
    stats = tilefuse.stats()
    print(json.dumps({
        "stats": stats,
        "hash": kernel.hash,
        "cubin": hashlib.sha256(kernel.asm["cubin"]).hexdigest(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
