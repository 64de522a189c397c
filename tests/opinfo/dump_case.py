"""Print everything about OpInfo cases, for a mismatch the sweep reports:
``python -m tests.opinfo.dump_case NAME-DTYPE-INDEX [...] [--device cuda]``.

For each case: the sample's tensors, eager's result, eager in float32 and in float64
(the references ``runner`` judges by), the aten graph tilefuse compiles run eagerly,
tilefuse's result, and the generated aten graph and kernels (``TILEFUSE_DEBUG_DIR``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from . import cases, runner


def _cast(tree: Any, dtype: torch.dtype) -> Any:
    def cast(t: Any) -> Any:
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            return t.to(dtype)
        return t

    return torch.utils._pytree.tree_map(cast, tree)


def dump(case_id: str, device: str) -> None:
    name, dtype, index = case_id.rsplit("-", 2)
    case = cases.Case(name, getattr(torch, dtype), int(index))
    sample = cases.sample_at(case.op, device, case.dtype, case.index)
    if sample is None:
        print(f"===== {case_id}: no such sample on {device}")
        return
    args, kwargs = (sample.input, *sample.args), sample.kwargs
    call = case.op.op
    print(f"===== {case_id} {cases.describe(sample)}")
    for i, a in enumerate(args):
        print(f"arg {i}", a)
    for key, value in kwargs.items():
        print(f"kw {key}", value)
    print("eager   ", call(*args, **kwargs))
    for dt in (torch.float32, torch.float64):
        up_args, up_kwargs = _cast((args, kwargs), dt)
        print(f"{str(dt)[6:]:8}", call(*up_args, **up_kwargs))

    def fn(*a: Any) -> Any:
        return call(*a, **kwargs)

    print("graph   ", runner._aten_graph_eagerly(fn, [runner._clone(a) for a in args]))
    debug = Path(tempfile.mkdtemp(prefix=f"tilefuse-{case_id}-"))
    os.environ["TILEFUSE_DEBUG_DIR"] = str(debug)
    torch._dynamo.reset()
    print("tilefuse", torch.compile(fn, backend="tilefuse")(*args))
    for path in sorted(debug.glob("*/*")):
        if path.name == "aten_graph.txt" or path.name.startswith("tf_"):
            print(f"---- {path}")
            print(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", metavar="NAME-DTYPE-INDEX")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_printoptions(precision=8)
    for case_id in args.cases:
        dump(case_id, args.device)


if __name__ == "__main__":
    main()
