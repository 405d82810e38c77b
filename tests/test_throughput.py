"""bench/throughput.py (B3) prints one JSON line per stage with the protocol's fields."""

import pytest
from pipeline_helpers import run_bench


@pytest.mark.slow
def test_quick_run_prints_a_line_per_stage(tmp_path, subprocess_env):
    args = ["--quick", "--sizes", "30,60", "--length", "330", "--steps", "2", "--warmup", "1"]
    lines = run_bench("throughput.py", [*args, "--workdir", str(tmp_path)], subprocess_env)
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
def test_setup_scale_prints_one_line_per_size(tmp_path, subprocess_env):
    args = ["--sizes", "20,40", "--length", "400", "--workdir", str(tmp_path)]
    lines = run_bench("setup_scale.py", args, subprocess_env)
    assert [(r["series"], r["rows"]) for r in lines] == [(20, 8000), (40, 16000)]
    for r in lines:
        assert r["setup_s"] >= 0 and r["peak_rss_mb"] > 0 and "held_vs_raw" in r
        assert r["raw_mb"] == pytest.approx(r["rows"] * 4 / 2**20, abs=0.05)
