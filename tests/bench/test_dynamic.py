"""The dynamic-shapes benchmark (bench/dynamic.py): its targets and verdicts, a wrong result
failing its cell, and a ``--smoke`` run of the transformer block whose JSON shows the
symbolic column compiled once and the static one once per length."""

from __future__ import annotations

import json

import pytest
import torch

from bench import dynamic, models

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("fresh_compile_state")


def _row(static_ms, symbolic_ms, static_compile_s=2.0, symbolic_compile_s=2.5, later=0):
    """A summarized row over lengths 4 and 6 from the columns' figures."""

    def cells(ms, **extra):
        return [{"seq": s, "ms": m, "error": None, **extra} for s, m in zip((4, 6), ms)]

    first = {k: 0 for k in dynamic.TILEFUSE_COUNTERS}
    first.update(graphs_compiled=1, graphs_compiled_symbolic=1)
    row = {
        "workload": "w",
        "seqs": [4, 6],
        "error": None,
        "results": {
            "eager": {"cells": cells([1.0, 1.0])},
            "tilefuse_symbolic": {
                "compile_s": symbolic_compile_s,
                "compile_seq": 4,
                "cells": cells(symbolic_ms),
                "tilefuse_first_call": first,
                "tilefuse_later_calls": {**dict.fromkeys(first, 0), "graphs_compiled": later},
            },
            "tilefuse_static": {"cells": cells(static_ms, compile_s=static_compile_s)},
        },
    }
    return dynamic.summarize(row)


def test_targets_pass_within_ten_percent_and_one_and_a_half_times_the_compile():
    row = _row([1.0, 2.0], [1.09, 2.1])
    assert [t["ok"] for t in row["targets"]] == [True, True, True]
    assert row["verdict"]["status"] == "PASS"
    assert [s["ratio"] for s in row["shapes"]] == pytest.approx([1.09, 1.05])


@pytest.mark.parametrize(
    "kwargs, target, words",
    [
        ({"symbolic_ms": [1.2, 2.0]}, 0, "4 (1.20x)"),
        ({"symbolic_compile_s": 3.5}, 1, "1.75x"),
        ({"later": 1}, 2, "later calls compiled 1"),
    ],
    ids=["slow-shape", "slow-compile", "recompiled"],
)
def test_each_target_can_miss(kwargs, target, words):
    figures = {"static_ms": [1.0, 2.0], "symbolic_ms": [1.0, 2.0], **kwargs}
    row = _row(**figures)
    assert row["targets"][target]["ok"] is False, row["targets"]
    assert sum(t["ok"] is False for t in row["targets"]) == 1
    assert row["verdict"]["status"] == "MISS" and words in row["verdict"]["reason"]


def test_a_missing_figure_is_no_verdict():
    row = _row([1.0, None], [1.0, 2.0])
    assert row["targets"][0]["ok"] is None and "6" in row["targets"][0]["detail"]
    assert row["verdict"]["status"] == "-"


def test_a_wrong_result_fails_its_cell():
    sweep = dynamic._Sweep(dynamic.WORKLOADS["block"], [5], models.SmokeTimer(CPU), smoke=True)
    eager = sweep.cell(dynamic.BY_NAME["eager"], 5, sweep.fn)
    assert eager["error"] is None and eager["ms"] is not None
    column = dynamic.BY_NAME["tilefuse_symbolic"]
    right = sweep.cell(column, 5, sweep.fn)
    assert right["error"] is None and right["ms"] is not None
    wrong = sweep.cell(column, 5, lambda x: sweep.fn(x) * 1.1)
    assert wrong["ms"] is None and wrong["error"].startswith("mismatch vs the fp32 reference")


def test_arguments_are_checked():
    with pytest.raises(SystemExit):
        dynamic.parse_args(["--seqs", "1,8"])  # Dynamo specializes 1
    with pytest.raises(SystemExit):
        dynamic.parse_args(["--workloads", "block,nope"])
    args = dynamic.parse_args(["--columns", "tilefuse_static"])
    assert args.columns == ["eager", "tilefuse_static"]
    smoke = dynamic.parse_args(["--smoke"])
    assert "inductor_dynamic" not in smoke.columns and smoke.workloads == ["block"]
    assert smoke.repeats == 1 and dynamic.parse_args([]).repeats == dynamic.DEFAULT_REPEATS
    with pytest.raises(SystemExit):
        dynamic.parse_args(["--repeats", "0"])


def test_smoke_run_writes_the_json(tmp_path, capsys):
    assert dynamic.main(["--smoke", "--seqs", "5,8", "--device", "cpu", "--out",
                         str(tmp_path)]) == 0  # fmt: skip
    (path,) = tmp_path.glob("dynamic-*.json")
    data = json.loads(path.read_text())
    assert data["schema"] == dynamic.SCHEMA_VERSION and data["mode"]["seqs"] == [5, 8]
    (row,) = data["rows"]
    assert row["workload"] == "block" and row["error"] is None
    for name in ("eager", "tilefuse_symbolic", "tilefuse_static"):
        cells = row["results"][name]["cells"]
        assert [c["seq"] for c in cells] == [5, 8]
        for c in cells:
            assert c["error"] is None and c["ms"] is not None, (name, c)
            assert c["ms"] == min(c["ms_repeats"]), c
            assert c["rel_error"] <= c["allowed_error"]
    sym = row["results"]["tilefuse_symbolic"]
    first, later = sym["tilefuse_first_call"], sym["tilefuse_later_calls"]
    assert first["graphs_compiled"] == first["graphs_compiled_symbolic"] >= 1, first
    assert first["graphs_fallen_back"] == 0 and first["symbolic_fallbacks"] == 0, first
    assert later["graphs_compiled"] == later["specializations_compiled"] == 0, later
    assert sym["compile_seq"] == 5 and sym["compile_s"] > 0
    for c in row["results"]["tilefuse_static"]["cells"]:
        assert c["tilefuse"]["graphs_compiled"] >= 1 and c["compile_s"] > 0, c
        assert c["tilefuse"]["graphs_compiled_symbolic"] == 0, c
        assert c["tilefuse"]["graphs_fallen_back"] == 0, c
    assert [s["seq"] for s in row["shapes"]] == [5, 8]
    assert all(s["ratio"] is not None for s in row["shapes"])
    once = row["targets"][2]
    assert once["target"] == "symbolic column compiled once" and once["ok"] is True, once
    assert row["verdict"]["status"] in ("PASS", "MISS")  # timing on the interpreter: no claim
    out = capsys.readouterr().out
    assert "symbolic column compiled once: met" in out and f"wrote {path}" in out


def test_profiles_print_side_by_side_per_workload():
    cell = {"seq": 8, "profile": [{"name": "tf_reduction_5", "ms": 0.049, "calls": 1.0}]}
    data = {"mode": {"profile": 8},
            "rows": [{"workload": "block", "results": {
                "tilefuse_symbolic": {"cells": [{"seq": 5}, cell]},
                "eager": {"cells": [{"seq": 8, "profile": [
                    {"name": "aten::bmm", "ms": 0.02, "calls": 2.0}]}]}}}]}  # fmt: skip
    text = dynamic.format_profiles(data)
    assert text.splitlines()[0] == "top kernels per iteration: block / seq 8 (ms, calls)"
    assert "tilefuse_symbolic" in text and "tf_reduction_5" in text and "aten::bmm" in text
    assert dynamic.parse_args(["--profile", "512"]).profile == 512


def test_compile_profile_smoke_prints_both_columns_by_phase(capsys):
    from bench import compile_profile

    assert compile_profile.main(["--smoke", "--seq", "5", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "block at 5 on cpu: first call (cold compile)" in out
    phases = {line[:28].strip(): line[28:].split() for line in out.splitlines()
              if line[:28].strip() in ("wall", "tilefuse compile_graph")}  # fmt: skip
    for label, (symbolic, static) in phases.items():
        assert float(symbolic) > 0 and float(static) > 0, (label, out)
    assert "== tilefuse_symbolic: top 3" in out and "== tilefuse_static: top 3" in out
