"""tilefuse-backend-rocm: HIP C++ kernels compiled with hipcc.

``BACKEND`` (in ``descriptor``) is the ``tilefuse.backends`` entry point.
"""

from .descriptor import BACKEND

__all__ = ["BACKEND"]
