"""tilefuse-backend-triton: Triton code generation for tilefuse.

Importing this package imports no toolkit; ``BACKEND`` (in ``descriptor``) is
the ``tilefuse.backends`` entry point, and Triton is imported by its ``load()``.
"""

from .descriptor import BACKEND

__all__ = ["BACKEND"]
