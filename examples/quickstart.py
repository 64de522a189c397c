"""Quickstart: compile a small model with tilefuse, check it against eager, show the kernels.

Run with `nox -s demo`, or `python examples/quickstart.py` where tilefuse is installed.
Without a GPU it turns on Triton's interpreter (slow, but the same generated code).
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    import torch

    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        os.environ["TRITON_INTERPRET"] = "1"
        print("quickstart: no CUDA GPU here; turned on TRITON_INTERPRET=1 (CPU interpreter)")
    device = "cuda" if torch.cuda.is_available() else "cpu"

    import tilefuse

    class Block(torch.nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.norm = torch.nn.LayerNorm(dim)
            self.up = torch.nn.Linear(dim, 4 * dim)
            self.down = torch.nn.Linear(4 * dim, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.up(self.norm(x))
            return x + self.down(torch.nn.functional.gelu(h))

    torch.manual_seed(0)
    model = Block(64).to(device)
    x = torch.randn(8, 64, device=device, requires_grad=True)

    compiled = torch.compile(model, backend="tilefuse")
    out = compiled(x)
    expected = model(x)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    out.sum().backward()
    print(
        f"quickstart: forward and backward ran; max |diff| vs eager = "
        f"{(out - expected).abs().max().item():.2e}"
    )

    print("\nwhat tilefuse made of the block's forward pass:")
    with torch.no_grad():
        print(tilefuse.explain(model, x.detach()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
