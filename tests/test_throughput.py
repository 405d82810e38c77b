"""bench/throughput.py (B3) prints one JSON line per stage with the protocol's fields.

The scripts' drivers run in the test's process (`bench_runner`); each stage they measure still
runs in a fresh process of its own, as the scripts intend (its own peak memory).
"""

import pytest
from bench_runner import run_bench_inprocess


@pytest.mark.slow
def test_quick_run_prints_a_line_per_stage(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.setenv("FORECAST_BENCH_THREADS", "1")  # the other worker has the other core
    args = ["--quick", "--sizes", "30,60", "--length", "330", "--steps", "2", "--warmup", "1"]
    lines = run_bench_inprocess("throughput.py", [*args, "--workdir", str(tmp_path)], monkeypatch, capfd)
    assert [(r["stage"], r["series"]) for r in lines] == [
        ("data", 30),
        ("train", 30),
        ("forecast", 30),
        ("forecast", 60),
    ]
    rates = {"data": "batches_per_s", "train": "windows_per_s", "forecast": "series_per_s"}
    for r in lines:
        assert {"stage", "model", "series", "wall_s", "peak_rss_mb", rates[r["stage"]]} <= set(r)
        assert r[rates[r["stage"]]] > 0 and r["peak_rss_mb"] > 0
    assert lines[-1]["rows_out"] == 60 * 48


@pytest.mark.slow
def test_setup_scale_prints_one_line_per_size_and_store(tmp_path, monkeypatch, capfd):
    args = ["--sizes", "20", "--length", "400", "--workdir", str(tmp_path), "--train-steps", "2"]
    lines = run_bench_inprocess("setup_scale.py", [*args, "--warmup", "1"], monkeypatch, capfd)
    assert [r["stage"] for r in lines] == ["read", "mapped", "mapped-reuse", "memory"]
    for r in lines:
        assert r["peak_rss_mb"] > 0
        if r["stage"] == "read":
            assert r["read_s"] >= 0 and r["rows"] == 8000
            continue
        assert r["setup_s"] >= 0 and r["rows"] == r["series"] * 400 and "rss_anon_mb" in r
        assert r["raw_mb"] == pytest.approx(r["rows"] * 4 / 2**20, abs=0.05)
        if r["stage"] != "mapped-reuse":
            assert r["windows_per_s"] > 0
    mapped, memory = lines[1], lines[3]
    assert mapped["train_windows"] == memory["train_windows"]
    assert not list(tmp_path.glob("cache_*"))  # the stores go with the run
