"""The worker's measuring task, in this process: fresh inputs per candidate."""

from __future__ import annotations

import pytest
import torch

from tests.autotune.fake_choices import mm_problem
from tilefuse import plugin
from tilefuse_autotune import measure
from tilefuse_autotune.timing import TimingConfig

QUICK = TimingConfig(cpu_warmup=0, cpu_reps=1)


class ScribblingChoice:
    """Correct output, then it zeroes its inputs (a kernel writing where it should not)."""

    provider, name = "fake", "scribbler"

    def compile(self) -> None:
        pass

    def run(self, a, b, *, out) -> None:
        torch.mm(a, b, out=out)
        a.zero_()
        b.zero_()


class MMChoice(ScribblingChoice):
    name = "mm"

    def run(self, a, b, *, out) -> None:
        torch.mm(a, b, out=out)


def test_a_candidate_that_scribbles_on_its_inputs_does_not_mislead_the_next():
    inputs, layout = mm_problem(24, 16, 8)
    problem = measure.Problem("mm", inputs, layout, plugin.Epilogue(), seed=7)
    measure.measure(lambda: None, problem, ScribblingChoice(), QUICK)
    # The next candidate starts from the problem's inputs, not the zeroed copies: a plain
    # product still matches the reference (on zeroed inputs it would be all zeros).
    measure.measure(lambda: None, problem, MMChoice(), QUICK)
    fresh = measure.fresh_inputs(problem)
    assert all(bool(t.abs().sum() > 0) for t in fresh)
    assert [t.stride() for t in fresh] == [spec.stride for spec in inputs]
    torch.testing.assert_close(fresh, problem.make_inputs(), rtol=0, atol=0)


def test_inputs_follow_the_problem_when_it_changes():
    first = measure.Problem("mm", *mm_problem(8, 8, 8), plugin.Epilogue(), seed=1)
    second = measure.Problem("mm", *mm_problem(8, 8, 8), plugin.Epilogue(), seed=2)
    a1 = measure.fresh_inputs(first)[0]
    a2 = measure.fresh_inputs(second)[0]
    assert not torch.equal(a1, a2)
    torch.testing.assert_close(a2, second.make_inputs()[0], rtol=0, atol=0)
    with pytest.raises(measure.WrongResult):
        measure.check_close(torch.zeros(2), torch.ones(2), "float32")


class StrayWriteChoice(MMChoice):
    """Correct output; from its second run on (the timed ones), a store past its buffers
    that lands on the kept pristine input (an out-of-bounds write into a neighbouring
    allocation on a GPU)."""

    name = "stray-write"

    def __init__(self) -> None:
        self.runs = 0

    def run(self, a, b, *, out) -> None:
        torch.mm(a, b, out=out)
        self.runs += 1
        if self.runs > 1:
            measure._pristine(PROBLEM)[2][0].zero_()


PROBLEM = measure.Problem("mm", *mm_problem(24, 16, 8), plugin.Epilogue(), seed=3)


def test_a_candidate_that_changes_the_pristine_inputs_fails_and_misleads_no_other():
    with pytest.raises(measure.WrongResult, match="outside its output"):
        measure.measure(lambda: None, PROBLEM, StrayWriteChoice(), QUICK)
    # made again: the next candidate is judged on the problem's own inputs
    measure.measure(lambda: None, PROBLEM, MMChoice(), QUICK)
    torch.testing.assert_close(measure.fresh_inputs(PROBLEM), PROBLEM.make_inputs(), rtol=0, atol=0)


def test_a_candidate_that_changes_the_kept_reference_fails():
    class RefWriter(MMChoice):
        def run(self, a, b, *, out) -> None:
            torch.mm(a, b, out=out)
            measure._reference_output(PROBLEM).add_(1)

    with pytest.raises(measure.WrongResult, match="outside its output"):
        measure.check(lambda: None, PROBLEM, RefWriter())
    measure.check(lambda: None, PROBLEM, MMChoice())


class CountingChoice(MMChoice):
    """A correct product that counts its runs."""

    def __init__(self) -> None:
        self.runs = 0

    def run(self, a, b, *, out) -> None:
        self.runs += 1
        super().run(a, b, out=out)


def test_a_candidate_slower_than_the_cutoff_after_its_screen_runs_is_not_measured_further():
    timing = TimingConfig(cpu_warmup=1, cpu_reps=20, screen_runs=3, screen_margin=1.25)
    problem = measure.Problem("mm", *mm_problem(16, 16, 16), plugin.Epilogue())
    # the check run, the warm-up run, then the timed runs
    full, screened, unscreened = CountingChoice(), CountingChoice(), CountingChoice()
    measure.measure(lambda: None, problem, full, timing)
    assert full.runs == 1 + 1 + 20
    ms = measure.measure(lambda: None, problem, screened, timing, best_ms=1e-9)
    assert screened.runs == 1 + 1 + 3 and ms > 1e-9 * timing.screen_margin
    measure.measure(lambda: None, problem, unscreened, timing, best_ms=1e9)
    assert unscreened.runs == 1 + 1 + 20
