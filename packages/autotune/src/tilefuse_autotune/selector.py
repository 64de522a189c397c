"""The autotuner as core sees it: a ``tilefuse.plugin.TemplateSelector`` found through the
``tilefuse.autotune.selector`` entry point, so that core never imports this package."""

from __future__ import annotations

from collections.abc import Sequence

from tilefuse import plugin


class AutotuneSelector:
    """``select`` with every installed choice provider and the ``TILEFUSE_AUTOTUNE`` mode;
    ``accepts`` asks those providers whether one fuses an epilogue."""

    name = "autotune"
    api_version = plugin.API_VERSION

    def accepts(
        self,
        op: str,
        inputs: Sequence[plugin.TensorSpec],
        layout: plugin.TensorSpec,
        epilogue: plugin.Epilogue,
    ) -> plugin.Verdict:
        from .selection import accepts

        return accepts(op, inputs, layout, epilogue)

    def select(
        self,
        op: str,
        inputs: Sequence[plugin.TensorSpec],
        layout: plugin.TensorSpec,
        epilogue: plugin.Epilogue,
    ) -> plugin.Selected:
        from .selection import select

        return select(op, None, inputs, layout, epilogue)

    def warm_up(self, device_type: str) -> None:
        """Start the worker zygote in the background on CUDA (``selection.warm_workers``)."""
        from .selection import warm_workers

        warm_workers(device_type)

    def __repr__(self) -> str:
        return "AutotuneSelector()"


SELECTOR = AutotuneSelector()
