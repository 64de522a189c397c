"""Where the GPU waits inside a zoo model's iteration: ``python bench/gpu_idle.py MODEL MODE
[BACKEND]`` (MODE: infer-bf16, train-fp32 or train-amp; BACKEND default ``tilefuse``).

Profiles three iterations after four warm-up ones and prints, per iteration, the span from
the first kernel's start to the last one's end, the time kernels ran, and the idle gaps
longer than 2 us, summed by the kernel that ran after them. Long gaps before many small
kernels mean the host was late (launch overhead); a gap before one kernel, a host-side
wait there. A span close to its busy time means the kernels themselves are the cost.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `import bench` work
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench import models, zoo  # noqa: E402

WARMUP = 4
PROFILED = 3
MIN_GAP_US = 2.0
TOP = 25


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in zoo.BY_NAME or argv[1] not in models.MODES:
        print(f"usage: gpu_idle.py MODEL MODE [BACKEND]; models: {', '.join(zoo.BY_NAME)}; "
              f"modes: {', '.join(models.MODES)}")  # fmt: skip
        return 2
    if not torch.cuda.is_available():
        print("gpu_idle.py needs a CUDA GPU")
        return 2
    name, mode = argv[0], argv[1]
    backend = argv[2] if len(argv) > 2 else "tilefuse"
    zm = zoo.BY_NAME[name]
    torch.manual_seed(0)
    x, y = zm.inputs(torch.device("cuda"), False)
    prepared = models.prepare(zm, zm.make(False).to("cuda"), x, y, mode)
    fn = prepared.fn if backend == "eager" else torch.compile(prepared.fn, backend=backend)
    step = prepared.step(fn)

    def iteration() -> None:
        for leaf in prepared.leaves:
            leaf.grad = None
        step()

    for _ in range(WARMUP):
        iteration()
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(PROFILED):
            iteration()
        torch.cuda.synchronize()
    kernels = sorted(
        (e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
        key=lambda e: e.time_range.start,
    )
    if not kernels:
        print("no kernels were recorded")
        return 1
    busy = sum(e.time_range.end - e.time_range.start for e in kernels) / PROFILED
    span = (kernels[-1].time_range.end - kernels[0].time_range.start) / PROFILED
    idle: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    end = kernels[0].time_range.end
    for e in kernels[1:]:
        gap = e.time_range.start - end
        if gap > MIN_GAP_US:
            idle[e.name[:60]] += gap / PROFILED
            count[e.name[:60]] += 1
        end = max(end, e.time_range.end)
    waited = sum(idle.values()) / 1e3
    print(f"{name} {mode} {backend}: span {span / 1e3:.3f} ms/iteration, busy "
          f"{busy / 1e3:.3f}, idle (gaps > {MIN_GAP_US:g} us) {waited:.3f}")  # fmt: skip
    for kernel, us in idle.most_common(TOP):
        print(f"  {us / 1e3:7.3f} ms  x{count[kernel] / PROFILED:5.1f}  before {kernel}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
