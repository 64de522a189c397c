"""The conformance kit: checks that a device backend honours the plugin contract and
computes what eager PyTorch computes.

``tilefuse conformance NAME`` runs it from the command line; from pytest::

    from tilefuse.testing import run_conformance

    def test_my_backend_conforms():
        run_conformance("mybackend").assert_ok()
"""

from __future__ import annotations

from .report import CaseResult, ConformanceReport, Outcome
from .runner import run_conformance

__all__ = ["CaseResult", "ConformanceReport", "Outcome", "run_conformance"]
