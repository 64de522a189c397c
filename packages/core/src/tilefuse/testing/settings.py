"""Environment settings applied while a conformance case runs, then restored."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set the environment variables ``values`` for the block; restore them after
    (unset ones are removed again). tilefuse reads its settings at call time
    (``tilefuse.config``), so this is how a case forces a backend or strict mode."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
