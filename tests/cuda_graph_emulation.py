"""A CUDA graph emulated on the CPU, for testing tilefuse.cuda_graphs without a GPU.

``ReplayGraph`` follows the ``cuda_graphs.Graph`` protocol: capture records the callable
and its argument list and poisons the outputs it owns (NaN, -7 in an integer tensor: a
real capture computes nothing), and each replay recomputes them *into the same output
tensors*, as a CUDA graph replay rewrites its static outputs. What it cannot show:
capture errors of real CUDA ops, the private memory pool, streams and the CUDA
generator's graph-safe random numbers.
"""

from __future__ import annotations

import torch


class ReplayGraph:
    """An emulated CUDA graph (see the module docstring)."""

    def capture(self, fn, args):
        self.fn, self.args = fn, list(args)
        inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
        self.outputs = fn(args)
        for out in self.outputs:
            if isinstance(out, torch.Tensor) and out.untyped_storage().data_ptr() not in inputs:
                out.fill_(float("nan") if out.is_floating_point() else -7)
        return self.outputs

    def replay(self):
        fresh = self.fn(list(self.args))
        for static, new in zip(self.outputs, fresh):
            if isinstance(static, torch.Tensor) and static is not new:
                static.copy_(new)
