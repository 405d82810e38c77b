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
