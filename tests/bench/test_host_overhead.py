"""The host-overhead benchmark (bench/host_overhead.py): the chain workload really is one
kernel per step, the targets and the 'unavailable' verdict, and a ``--smoke`` run's JSON."""

from __future__ import annotations

import json

import pytest
import torch

import tilefuse
from bench import host_overhead as ho
from tilefuse.report import collect_reports

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


pytestmark = pytest.mark.usefixtures("fresh_compile_state")


def test_chain_steps_do_not_fuse():
    # Each step needs all of the previous step's result: one kernel per step, no fewer.
    work = ho.chain_workload(3, DEVICE)
    with collect_reports() as reports:
        out = torch.compile(work.fn, backend="tilefuse")(*work.inputs)
    assert work.check(out) is None
    assert tilefuse.stats()["graphs_fallen_back"] == 0
    assert sum(len(r.kernels) for r in reports) == 3
    assert work.check(out + 1) is not None  # the check can fail


def test_targets_compare_the_cpp_wrapper_with_python_and_inductor():
    def row(steps, **host):
        return {"workload": f"chain-{steps}", "steps": steps,
                "results": {k: {"host_us": v} for k, v in host.items()}}  # fmt: skip

    rows = [
        row(1, tilefuse_cpp=50.0, tilefuse_py=60.0, inductor_cpp=10.0),  # not a target row
        row(10, tilefuse_cpp=40.0, tilefuse_py=100.0, inductor_cpp=45.0),
        row(100, tilefuse_cpp=300.0, tilefuse_py=500.0),
    ]
    found = {(t["workload"], t["target"].split(" <= ")[1]): t["ok"] for t in ho.targets(rows)}
    assert found == {
        ("chain-10", "inductor_cpp host"): True,
        ("chain-10", "0.5 x tilefuse_py host"): True,
        ("chain-100", "inductor_cpp host"): None,  # no Inductor figure
        ("chain-100", "0.5 x tilefuse_py host"): False,  # 300 > 250
    }


def test_a_mode_that_warns_it_is_not_built_is_unavailable(monkeypatch):
    column = ho.BY_NAME["inductor_cg"]
    warning = "mode='reduce-overhead': CUDA-graph replay is not built yet"
    assert ho.unavailable_reason(column, [warning]) == warning
    assert ho.unavailable_reason(column, ["something else"]) is None
    assert ho.unavailable_reason(ho.BY_NAME["inductor"], [warning]) is None  # no mode asked
    # tilefuse's own table of unbuilt modes is asked first (it warns once per process)
    from tilefuse import compile_options

    monkeypatch.setattr(compile_options, "UNBUILT_MODES", {"reduce-overhead": "later"},
                        raising=False)  # fmt: skip
    assert "later" in ho.unavailable_reason(ho.BY_NAME["tilefuse_cpp_cg"], [])
    monkeypatch.setattr(compile_options, "UNBUILT_MODES", {}, raising=False)
    assert ho.unavailable_reason(ho.BY_NAME["tilefuse_cpp_cg"], []) is None


def test_unknown_columns_are_refused():
    with pytest.raises(SystemExit):
        ho.parse_args(["--columns", "eager,nope"])


def test_smoke_run_writes_the_table_and_json(tmp_path, capsys):
    columns = "eager,tilefuse_py,tilefuse_cpp_cg"
    assert ho.main(["--smoke", "--ks", "2", "--columns", columns, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "host µs / wall µs" in printed and "chain-2" in printed
    (path,) = tmp_path.glob("host-overhead-*.json")
    data = json.loads(path.read_text())
    assert data["schema"] == ho.SCHEMA_VERSION and data["mode"]["smoke"] is True
    assert list(data["columns"]) == columns.split(",")
    (row,) = data["rows"]
    assert row["workload"] == "chain-2" and row["steps"] == 2
    eager, py, graphs = (row["results"][c] for c in columns.split(","))
    assert eager["error"] is None and eager["host_us"] > 0 and eager["wall_us"] > 0
    assert py["error"] is None and py["host_us"] > 0
    assert py["tilefuse_kernels"] == 2 and py["wrappers"] == ["python"]
    assert py["tilefuse"]["graphs_compiled"] == 1 and py["tilefuse"]["graphs_fallen_back"] == 0
    # CUDA-graph replay: measured once built, else said to be unavailable with the reason
    assert graphs.get("unavailable") or graphs["host_us"] is not None, graphs


def test_a_spent_time_budget_records_the_rest_as_not_run(tmp_path):
    argv = ["--smoke", "--ks", "1,2", "--columns", "eager", "--max-total-s", "0",
            "--out", str(tmp_path)]  # fmt: skip
    assert ho.main(argv) == 0
    (path,) = tmp_path.glob("host-overhead-*.json")
    rows = json.loads(path.read_text())["rows"]
    assert [r["workload"] for r in rows] == ["chain-1", "chain-2"]
    assert all(r["error"].startswith("not run") and r["results"] == {} for r in rows)
    assert ho.parse_args(["--ks", "none", "--models", "none"]).ks == []
