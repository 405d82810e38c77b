"""The accuracy benchmark scripts run end to end with --quick and print well-formed lines; the GPU
script (bench/gpu.sh, bench/gpu.py) stops in one line without CUDA and its code runs on the CPU.

Needs the benchmark data: the folder in FORECAST_BENCH_DATA, else `shared/data` beside the
repository root; skipped when it is absent. The scripts run in the test's process
(`bench_runner`), as `python bench/<script> --quick` would.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bench_runner import run_bench_inprocess

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("FORECAST_BENCH_DATA") or REPO / ".." / "shared" / "data").resolve()

KEYS = {"dataset", "model", "input_size", "horizon", "metrics", "train_s", "predict_s", "peak_rss_mb"}


@pytest.fixture
def run(monkeypatch, capfd):
    """`run(script, *args, needs=<file under the data folder>)`: its lines, each with KEYS."""

    def run(script: str, *args: str, needs: str) -> list[dict]:
        if not (DATA / needs).exists():
            pytest.skip(f"benchmark data not found: {DATA / needs}")
        monkeypatch.setenv("FORECAST_BENCH_DATA", str(DATA))
        lines = run_bench_inprocess(script, ["--quick", *args], monkeypatch, capfd)
        for line in lines:
            assert KEYS <= line.keys(), line
        return lines

    return run


@pytest.mark.slow
def test_m4_hourly_quick(run):
    lines = run("m4_hourly.py", needs="m4-hourly/Hourly-train.csv")
    by_model = {line["model"]: line for line in lines}
    assert {"naive", "snaive", "naive2", "lstm"} <= by_model.keys()
    for line in lines:
        assert line["dataset"] == "m4_hourly" and line["horizon"] == 48
        assert set(line["metrics"]) == {"smape", "mase", "owa"}
    # The script's own metric code reproduces the reference figures.
    snaive, naive2 = by_model["snaive"]["metrics"], by_model["naive2"]["metrics"]
    assert (snaive["smape"], snaive["mase"]) == pytest.approx((13.912, 1.193), abs=5e-4)
    assert (naive2["smape"], naive2["mase"]) == pytest.approx((18.383, 2.395), abs=5e-4)
    assert 0 < by_model["lstm"]["metrics"]["owa"] < 2
    # Validation beside test on every line (val OWA is relative to Naive2 on the same windows),
    # and one model per line by default.
    for line in lines:
        assert line["members"] == 1
        assert 0 < line["val_smape"] < 200 and 0 < line["val_mase"] and 0 < line["val_owa"]
    assert by_model["naive2"]["val_owa"] == 1.0
    ours = by_model["lstm"]
    assert ours["seed"] == 1 and ours["checkpoint"] == "best" and ours["monitor"] == "val/smape"
    # Our val_smape is scored on the windows the model early-stopped on: the same figure.
    assert ours["val_smape"] == pytest.approx(ours["monitor_best"], rel=1e-3)


@pytest.mark.slow
def test_short_series_quick(run):
    lines = run("short_series.py", needs="m4-hourly/Hourly-train.csv")
    assert {(line["group"], line["split"], line["model"]) for line in lines} == {
        (g, s, m)
        for g in ("padded", "untouched")
        for s in ("val", "test")
        for m in ("lstm", "lstm+blend", "snaive")
    }
    by = {(line["group"], line["split"], line["model"]): line["metrics"] for line in lines}
    for split in ("val", "test"):  # the blend touches padded windows only: long series, the same forecast
        assert by["untouched", split, "lstm+blend"] == by["untouched", split, "lstm"]
    padded = [line for line in lines if line["group"] == "padded"]
    assert {line["series"] for line in padded} == {138} and {line["observed"] for line in padded} == {52, 100}
    for line in lines:
        assert set(line["metrics"]) == {"smape", "mase"}
        assert 0 < line["metrics"]["smape"] < 200 and 0 < line["metrics"]["mase"] < 100


@pytest.mark.slow
def test_etth1_quick(run):
    lines = run("etth1.py", "--setting", "univariate", needs="ett/ETTh1.csv")
    assert {line["model"] for line in lines} == {"naive", "snaive", "lstm"}
    for line in lines:
        assert line["dataset"] == "etth1" and line["setting"] == "univariate"
        assert (line["input_size"], line["horizon"]) == (96, 96)
        assert set(line["metrics"]) == {"mse", "mae"}
    naive = next(line for line in lines if line["model"] == "naive")
    assert naive["metrics"]["mse"] == pytest.approx(0.0693, abs=5e-5)
    assert 0 < next(line for line in lines if line["model"] == "lstm")["metrics"]["mse"] < 1
    for line in lines:  # validation beside test, every window of the validation part, one model
        assert line["members"] == 1 and line["val_windows"] == 2880 - 96 + 1
        assert 0 < line["val_mse"] < 1 and 0 < line["val_mae"] < 1


@pytest.mark.parametrize("experiment", ["m4_hourly", "etth1_univariate", "etth1_multivariate"])
def test_experiments_compose(experiment, tmp_path):
    """The benchmark bundles compose and build their model (data.path is the user's)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", f"data.path={tmp_path / 'x.parquet'}"])
    module = instantiate(cfg.model, n_series=7)  # training passes the data's count (per-series cycles)
    assert module.net.norm.kind == "revin" and module.net.skip is not None
    assert cfg.data.val_size >= cfg.data.horizon and cfg.data.test_size == cfg.data.val_size


@pytest.mark.slow
def test_demo_defaults_quick(monkeypatch, capfd):
    """The embedded-data defaults script needs no benchmark data: one line per variant, val beside test."""
    lines = run_bench_inprocess("demo_defaults.py", ["--quick"], monkeypatch, capfd)
    assert [line["variant"] for line in lines] == ["default", "model.window_norm=false"]
    for line in lines:
        assert line["members"] == 1 and line["dataset"] == "m4_hourly_sample"
        assert set(line["metrics"]) == {"mae", "rmse", "smape", "mase"}
        assert all(0 < line[f"val_{k}"] < 1e6 for k in ("mae", "rmse", "smape", "mase"))
        assert line["monitor"] == "val/loss"
    # The two variants are different models: their validation figures differ.
    assert lines[0]["val_mae"] != lines[1]["val_mae"]


@pytest.mark.slow
def test_epf_recalibrated_quick(run, tmp_path):
    """Refits through the product's refit backtest: the recalibrated and the never-refit lines of
    the same initial model, scored on the protocol's validation and test days."""
    kept = tmp_path / "kept"
    lines = run("epf_recalibrated.py", "--no-trained-once", "--keep", str(kept), needs="epf/NP.csv")
    recal, initial = lines
    assert recal["refit"].startswith("every 182 days, warm, 5 steps") and initial["refit"] is False
    assert recal["refits"] == 6 and recal["refit_steps_taken_mean"] == 5.0  # 1,092 days / 182
    for line in lines:
        assert (line["days"], line["val_days"], line["members"]) == (728, 364, 1)
        assert 0 < line["metrics"]["mae"] < 10 and 0 < line["val_mae"] < 10
    assert recal["metrics"] != initial["metrics"]  # the refits forecast, not the initial model
    # A kept seed is reused (seeds run in parallel processes), and seeds combine into ensembles:
    # seed 2 here is a copy of seed 1, so its ensembles score as seed 1 does.
    for suffix in ("json", "npz"):
        (kept / f"NP-seed2.{suffix}").write_bytes((kept / f"NP-seed1.{suffix}").read_bytes())
    again = run(
        "epf_recalibrated.py",
        "--no-trained-once",
        "--keep",
        str(kept),
        "--seeds",
        "1",
        "2",
        needs="epf/NP.csv",
    )
    assert again[:2] == lines and again[2:4] == lines
    ensembles = again[4:]  # recalibrated, then never refit; each the mean, then the median
    assert [(e["combine"], e["members"], bool(e["refit"])) for e in ensembles] == [
        ("mean", 2, True),
        ("median", 2, True),
        ("mean", 2, False),
        ("median", 2, False),
    ]
    for ensemble, member in zip(ensembles, (recal, recal, initial, initial), strict=True):
        assert ensemble["val_mae"] == pytest.approx(member["val_mae"])
        assert ensemble["metrics"]["mae"] == pytest.approx(member["metrics"]["mae"])


@pytest.mark.slow
def test_warm_start_quick(run):
    lines = run("warm_start.py", needs="epf/NP.csv")
    assert [line["model"] for line in lines] == [
        "champion (data to a month before)",
        "scratch",
        "fine-tune",
        "warm start pays",
    ]
    scratch, fine_tune, summary = lines[1:]
    assert len(scratch["val_curve"]) == scratch["epochs"] == 2  # one point per epoch
    assert summary["scratch_val_mae"] == scratch["val_mae"]
    reached = summary["fine_tune_reaches_scratch_val_s"]
    assert reached is None or 0 < reached <= fine_tune["fit_s"]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: bench/gpu.sh would run")
def test_gpu_sh_without_cuda_stops_at_once_with_one_line():
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    assert (proc.returncode, proc.stdout) == (3, "")
    assert proc.stderr.startswith("bench/gpu.py: no CUDA device: ") and proc.stderr.count("\n") == 1


@pytest.mark.slow
def test_gpu_script_runs_its_stages_on_the_cpu(tmp_path, monkeypatch, capfd):
    """bench/gpu.py's own code (data, training in float32 and bf16-mixed, the streamed forecast
    with the net moved) with the CPU standing in for the GPU: a lent GPU's minutes are not spent
    on a broken script."""
    args = ["--device", "cpu", "--segment-lens", "24", "--train-series", "30", "--forecast-series", "60"]
    args += ["--length", "330", "--steps", "2", "--warmup", "1", "--workdir", str(tmp_path)]
    lines = run_bench_inprocess("gpu.py", args, monkeypatch, capfd)
    assert [(line["stage"], line["precision"]) for line in lines] == [
        ("train", "32-true"),
        ("train", "bf16-mixed"),
        ("forecast", "32-true"),
    ]
    for line in lines:
        assert line["model"] == "lstm-seg24" and line["members"] == 1 and line["device"] == "cpu"
        assert {"wall_s", "peak_gpu_mb", "peak_rss_mb", "torch", "cuda", "cudnn"} <= line.keys()
    assert all(line["windows_per_s"] > 0 and line["series"] == 30 for line in lines[:2])
    forecast = lines[2]
    assert (forecast["series"], forecast["rows_in"], forecast["rows_out"]) == (60, 60 * 330, 60 * 48)
    assert forecast["series_per_s"] > 0 and forecast["net_series_per_s"] > 0
    assert forecast["vs_cpu_max_abs"] == 0.0  # the same device: the same numbers
