"""Where a compiled zoo model's host time goes: ``python bench/host_profile.py MODEL [BACKEND]
[--dynamic] [--mode MODE]`` (``--dynamic``: the input's sequence dimension marked dynamic, so
the graph is compiled for every length; ``--mode``: one of ``bench/models.py``'s modes,
default ``infer-bf16``).

Compiles MODEL of ``bench/zoo.py`` in MODE with BACKEND (default ``tilefuse``),
prints the host time per call (the loop without a synchronize) against the wall time,
then (for tilefuse, after ``tilefuse.stats()``) a cProfile of 20 calls sorted by own and by
cumulative time (Inductor's too: it makes the same extern calls). A model whose host time
per call is close to its wall time is host-bound: its kernels wait for Python, and the
profile says which Python.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `import bench` work
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench import models, zoo  # noqa: E402

CALLS = 50
PROFILED_CALLS = 20


def main(argv: list[str]) -> int:
    dynamic = "--dynamic" in argv
    argv = [a for a in argv if a != "--dynamic"]
    mode = models.INFER_BF16
    if "--mode" in argv:
        at = argv.index("--mode")
        mode = argv[at + 1] if at + 1 < len(argv) else ""
        del argv[at : at + 2]
        if mode not in models.MODES:
            print(f"--mode takes one of {', '.join(models.MODES)}")
            return 2
    if not argv or argv[0] not in zoo.BY_NAME:
        print(f"usage: host_profile.py MODEL [BACKEND] [--dynamic]; models: "
              f"{', '.join(zoo.BY_NAME)}")  # fmt: skip
        return 2
    name, backend = argv[0], (argv[1] if len(argv) > 1 else "tilefuse")
    if not torch.cuda.is_available():
        print("host_profile.py needs a CUDA GPU")
        return 2
    zm = zoo.BY_NAME[name]
    device = torch.device("cuda")
    x, y = zm.inputs(device, False)
    if dynamic:  # the sequence dimension of a token model: a graph for every length
        torch._dynamo.mark_dynamic(x, 1)
    prepared = models.prepare(zm, zm.make(False).to(device), x, y, mode)
    step = prepared.step(torch.compile(prepared.fn, backend=backend))
    start = time.perf_counter()
    step()
    torch.cuda.synchronize()
    print(f"{name}/{mode}/{backend}: first call (compile) {time.perf_counter() - start:.1f} s")
    if backend == "tilefuse":  # its C++ wrappers, built in the background, load first
        import tilefuse

        start = time.perf_counter()
        tilefuse.wait_for_builds()
        print(f"{name}/{mode}/{backend}: background builds {time.perf_counter() - start:.1f} s")
    for _ in range(4):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(CALLS):
        step()
    issued = time.perf_counter()
    torch.cuda.synchronize()
    done = time.perf_counter()
    print(f"{name}/{mode}/{backend}: host {1e3 * (issued - start) / CALLS:.3f} ms/call, "
          f"wall {1e3 * (done - start) / CALLS:.3f} ms/call")  # fmt: skip
    if backend == "tilefuse":
        print(tilefuse.stats())
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(PROFILED_CALLS):
        step()
    profiler.disable()
    torch.cuda.synchronize()
    for key in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(key).print_stats(30)
        print(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
