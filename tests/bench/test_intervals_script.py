"""bench/intervals.py runs end to end on the embedded data (--quick) and prints one line per
interval scale and level, with validation figures beside the test ones (in the test's process,
as `python bench/intervals.py` would)."""

import pytest
from bench_runner import run_bench_inprocess


@pytest.mark.slow
def test_intervals_quick_on_the_embedded_data(monkeypatch, capfd):
    lines = run_bench_inprocess("intervals.py", ["--task", "demo", "--quick"], monkeypatch, capfd)
    assert [(line["interval_scale"], line["level"]) for line in lines] == [
        ("series", 80),
        ("series", 95),
        ("window", 80),
        ("window", 95),
    ]
    for line in lines:
        assert line["dataset"] == "m4_hourly_sample" and line["members"] == 1
        assert line["test_windows"] == line["calibration_windows"] == 69  # one window per series each
        # The calibration windows themselves are covered at least at the level by construction,
        # but for the window at the quantile itself, which float32 bounds may put just outside.
        assert line["val_coverage"] >= line["level"] - 100 / 69
        assert 0 <= line["coverage"] <= 100 and 0 <= line["val_split_coverage"] <= 100
        assert line["miss_points"] == pytest.approx(line["coverage"] - line["level"], abs=0.011)
    assert lines[1]["width"] > lines[0]["width"] and lines[3]["width"] > lines[2]["width"]
