"""tilefuse-backend-cuda: CUTLASS GEMM templates compiled with nvcc.

``BACKEND`` (in ``descriptor``) is the ``tilefuse.backends`` entry point.
"""

from .descriptor import BACKEND

__all__ = ["BACKEND"]
