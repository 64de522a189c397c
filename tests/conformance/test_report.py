"""The conformance report: what the CLI prints and what ``assert_ok`` raises."""

from __future__ import annotations

import pytest

from tilefuse.testing import CaseResult, ConformanceReport, Outcome


def _report(skips: int) -> ConformanceReport:
    report = ConformanceReport("demo", dist="acme-demo 1.0", device="cpu")
    report.results.append(CaseResult("descriptor: dtypes", Outcome.PASSED))
    report.results.append(CaseResult("pointwise: add", Outcome.FAILED, "differs\nat [0, 1]"))
    report.results += [
        CaseResult(f"dtype d{i}: sum", Outcome.SKIPPED, "not declared") for i in range(skips)
    ]
    return report


def test_failures_and_skips_are_listed_with_reasons_and_a_summary_last():
    text = _report(skips=2).format()
    lines = text.splitlines()
    assert lines[0] == "tilefuse conformance: backend 'demo' (acme-demo 1.0) on cpu"
    assert "FAILED  pointwise: add" in lines and "        at [0, 1]" in lines
    assert "SKIPPED dtype d1: sum" in lines
    assert "descriptor: dtypes" not in text  # passes only with verbose
    assert lines[-1] == "1 passed, 1 failed, 2 skipped"


def test_many_skips_for_one_reason_are_shown_once_unless_verbose():
    report = _report(skips=9)
    assert "SKIPPED 9 cases (the first: 'dtype d0: sum')" in report.format()
    assert report.format().count("not declared") == 1
    verbose = report.format(verbose=True)
    assert verbose.count("not declared") == 9 and "PASSED  descriptor: dtypes" in verbose


def test_assert_ok_raises_with_the_report_only_on_failure():
    with pytest.raises(AssertionError, match="pointwise: add"):
        _report(skips=0).assert_ok()
    ok = ConformanceReport("demo", results=[CaseResult("x", Outcome.SKIPPED, "why")])
    ok.assert_ok()
    assert ok.ok and ok.summary() == "0 passed, 0 failed, 1 skipped"
