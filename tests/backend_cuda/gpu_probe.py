"""Time each CUTLASS family against torch.mm on an sm_90 GPU and print TFLOP/s.

Run on the GPU machine: ``python -m tests.backend_cuda.gpu_probe``. Not a test:
figures are printed, never asserted. Kernels compile in parallel first.
"""

from __future__ import annotations

from tests.backend_cuda.cases import make_case
from tilefuse_cuda import compiler
from tilefuse_cuda.configs import ALL_CONFIGS
from tilefuse_cuda.problem import analyse
from tilefuse_cuda.provider import CutlassGemmChoice

SHAPES = ((8192, 8192, 8192), (4096, 4096, 11008))
EPILOGUES = {"plain": (), "bias+gelu_tanh": (("add_bias_n", "n"), ("gelu_tanh",))}


def _time_ms(fn, iters: int = 20) -> float:
    import torch

    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main() -> None:
    import torch

    jobs = []
    for m, n, k in SHAPES:
        for label, steps in EPILOGUES.items():
            case = make_case("mm", m, n, k, steps=steps)
            problem, dims = analyse(case.op, case.specs, case.layout, case.epilogue)
            for config in ALL_CONFIGS:
                jobs.append((case, label, CutlassGemmChoice(problem, config, dims)))
    results = compiler.compile_many([(c.name, c.source()) for _, _, c in jobs])
    print(f"{'shape':>20} {'epilogue':>15} {'kernel':>32} {'TFLOP/s':>8}")
    done = set()
    for (case, label, choice), built in zip(jobs, results):
        m, k = case.inputs[0].shape
        n = case.inputs[1].shape[1]
        flops = 2.0 * m * n * k
        shape = f"{m}x{n}x{k}"
        tensors = [s.random() for s in (*case.inputs, *case.epilogue.operands)]
        out = case.layout.empty()
        if (shape, label) not in done:
            done.add((shape, label))
            a, b = tensors[0], tensors[1]
            ms = _time_ms(lambda a=a, b=b: torch.mm(a, b))
            print(f"{shape:>20} {label:>15} {'torch.mm (no epilogue)':>32} {flops / ms / 1e9:8.1f}")
        if isinstance(built, Exception):
            print(f"{shape:>20} {label:>15} {choice.config.tag():>32}   failed: {built}")
            continue
        ms = _time_ms(lambda c=choice, t=tensors, o=out: c.run(*t, out=o))
        print(f"{shape:>20} {label:>15} {choice.config.tag():>32} {flops / ms / 1e9:8.1f}")


if __name__ == "__main__":
    main()
