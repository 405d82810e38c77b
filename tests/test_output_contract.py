"""The output contract (docs/batch.md, Output columns): every model writes `y_hat` first, then its
quantiles ascending, then its conformal intervals by level; `y_hat` is a distribution's exact
median and a quantile head's median; models saved before the contract follow it; the promotion
gate refuses a candidate that would drop a column the champion writes (unless force=true); and
readers of the forecast keep working when the champion changes head."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import torch
from app_runner import run_inprocess
from model_helpers import H, L, tiny_forecaster
from pipeline_helpers import register_forecaster, store_with_models
from safetensors.torch import save_file
from scipy import stats

from forecast.backtest import backtest_frame
from forecast.backtest_job import run_backtest
from forecast.blocks import SeriesBlock
from forecast.data import synthetic_long
from forecast.errors import ConfigError
from forecast.forecaster import Forecaster, ForecasterSettings
from forecast.models.distributions import DISTRIBUTIONS
from forecast.models.outputs import median_of_quantiles
from forecast.promotion import promote
from forecast.schedule import run_scheduled_forecast
from forecast.settings import SCALER, SETTINGS, WEIGHTS, saved_columns
from forecast.tracking.pyfunc import ForecastPyfunc

FIXTURES = Path(__file__).parent / "fixtures"
NETS = Path(__file__).parent / "models" / "fixtures" / "nets_before_covariates.pt"
HEADS = {
    "point": {},
    "quantile": {"loss": "quantile", "quantiles": [0.1, 0.5, 0.9]},
    **{name: {"loss": name} for name in DISTRIBUTIONS},
}
QUANTILES = ["y_hat_q10", "y_hat_q50", "y_hat_q90"]
BANDS = ["y_hat_lo_80", "y_hat_hi_80", "y_hat_lo_95", "y_hat_hi_95"]
VAL = {"val_size": 60}  # enough validation windows per step for a 95% interval (19)


@pytest.mark.parametrize("intervals", [[], [80, 95]], ids=["plain", "intervals"])
@pytest.mark.parametrize("head", HEADS)
def test_every_head_writes_y_hat_first_and_the_documented_columns(head, intervals, tiny_frame):
    forecaster = tiny_forecaster(tiny_frame, intervals=intervals, data=VAL, **HEADS[head])
    expected = [
        "unique_id",
        "ds",
        "y_hat",
        *(QUANTILES if head != "point" else []),
        *(BANDS if intervals else []),
    ]
    out = forecaster.predict(tiny_frame)
    assert list(out.columns) == forecaster.output_columns == expected
    assert out["y_hat"].dtype == np.float32 and out["y_hat"].notna().all()
    if head != "point":  # 0.5 is among the levels: y_hat is that column, exactly
        np.testing.assert_array_equal(out["y_hat"], out["y_hat_q50"])
    if intervals:  # centred on y_hat
        for level in intervals:
            mid = (out[f"y_hat_lo_{level}"] + out[f"y_hat_hi_{level}"]) / 2
            np.testing.assert_allclose(mid, out["y_hat"], rtol=1e-5, atol=1e-4)
    # The same columns from the pyfunc and, after the backtest's own, in the backtest's table.
    assert list(ForecastPyfunc(forecaster).predict(tiny_frame).columns) == expected
    table = backtest_frame(forecaster, tiny_frame, n_windows=2, season_length=24).table
    assert list(table.columns) == ["unique_id", "cutoff", "ds", "y", *expected[2:]]
    assert table["y_hat"].notna().all()


def _raw_params(forecaster: Forecaster, frame: pd.DataFrame):
    """The net's own output on the forecast windows (n, H, P), with the windows' loc and scale."""
    block = SeriesBlock.from_frame(forecaster.validate(frame).frame, forecaster.columns)
    w = forecaster.scaled_windows(block)
    mask = ~np.isnan(w.windows)
    batch = {
        "x": torch.from_numpy(np.where(mask, w.windows, 0).astype(np.float32)),
        "x_mask": torch.from_numpy(mask),
    }
    with torch.no_grad():
        params = forecaster.net(batch).numpy().astype(np.float64)
    return params, w.loc.astype(np.float64)[:, None], w.scale.astype(np.float64)[:, None]


@pytest.mark.parametrize("loss", DISTRIBUTIONS)
def test_y_hat_is_the_exact_median_of_the_distribution_without_a_median_level(loss, tiny_frame):
    frame = tiny_frame.assign(y=tiny_frame["y"].round()) if DISTRIBUTIONS[loss].discrete else tiny_frame
    forecaster = tiny_forecaster(frame, seed=3, loss=loss, quantiles=[0.1, 0.9])
    out = forecaster.predict(frame)
    assert list(out.columns) == ["unique_id", "ds", "y_hat", "y_hat_q10", "y_hat_q90"]
    params, loc, scale = _raw_params(forecaster, frame)
    if loss == "negbin":  # the median count of NB(mean = softplus(m * scale + loc), 1 / alpha)
        mean = np.log1p(np.exp(params[..., 0] * scale + loc))
        total = 1.0 / params[..., 1]
        median = stats.nbinom.ppf(0.5, total, total / (total + mean))
        np.testing.assert_array_equal(out["y_hat"].to_numpy(), median.reshape(-1))
    else:  # symmetric laws: the median is the location
        median = params[..., 0] * scale + loc
        np.testing.assert_allclose(out["y_hat"].to_numpy(), median.reshape(-1), rtol=1e-5, atol=1e-4)
    assert (out["y_hat_q10"] <= out["y_hat"]).all() and (out["y_hat"] <= out["y_hat_q90"]).all()


def test_a_quantile_head_without_the_median_level_interpolates():
    values = np.array([[1.0, 2.0, 4.0, 8.0]], np.float32)
    assert median_of_quantiles(values, [0.1, 0.4, 0.6, 0.9]).tolist() == [3.0]  # halfway: 0.4 .. 0.6
    assert median_of_quantiles(values[:, :3], [0.25, 0.45, 0.9]).tolist() == pytest.approx([2.0 + 2.0 / 9])
    assert median_of_quantiles(values[:, :2], [0.1, 0.3]).tolist() == [2.0]  # all below: the nearest
    assert median_of_quantiles(values[:, :2], [0.7, 0.9]).tolist() == [1.0]  # all above: the nearest
    assert median_of_quantiles(values[:, :3], [0.1, 0.5, 0.9]).tolist() == [2.0]
    assert median_of_quantiles(values, [0.1, 0.4, 0.6, 0.9]).dtype == np.float32


def test_a_quantile_model_without_0_5_writes_the_interpolated_median(tiny_frame):
    forecaster = tiny_forecaster(
        tiny_frame, loss="quantile", quantiles=[0.1, 0.4, 0.6, 0.9], intervals=[80], data=VAL
    )
    out = forecaster.predict(tiny_frame)
    assert list(out.columns)[2:] == ["y_hat", "y_hat_q10", "y_hat_q40", "y_hat_q60", "y_hat_q90", *BANDS[:2]]
    np.testing.assert_allclose(out["y_hat"], (out["y_hat_q40"] + out["y_hat_q60"]) / 2, rtol=1e-6)
    mid = (out["y_hat_lo_80"] + out["y_hat_hi_80"]) / 2
    np.testing.assert_allclose(mid, out["y_hat"], rtol=1e-5, atol=1e-4)


def _old_quantile_model(folder: Path) -> Path:
    """A quantile model as the code before the contract (and before covariates) saved it: the
    three-quantile net of `nets_before_covariates.pt`, settings without `covariates` or `output`."""
    saved = torch.load(NETS, weights_only=True)["nets"]["segments"]
    params = saved["params"]
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in saved["state"].items()}, str(folder / WEIGHTS))
    shutil.copy(FIXTURES / "model_v1" / SCALER, folder / SCALER)
    settings = json.loads((FIXTURES / "model_v1" / SETTINGS).read_text())
    settings.update(net_params=params, input_size=params["input_size"], horizon=params["horizon"])
    settings["quantiles"] = [0.1, 0.5, 0.9]
    (folder / SETTINGS).write_text(json.dumps(settings, indent=2))
    return folder


def test_models_saved_before_the_contract_write_y_hat(tmp_path):
    history = pd.read_csv(FIXTURES / "model_v1" / "history.csv", parse_dates=["ds"])
    old = _old_quantile_model(tmp_path / "old")
    assert "output" not in json.loads((old / SETTINGS).read_text())["net_params"]
    out = Forecaster.load(old).predict(history)
    assert list(out.columns) == ["unique_id", "ds", "y_hat", *QUANTILES] == saved_columns(old)
    np.testing.assert_array_equal(out["y_hat"], out["y_hat_q50"])
    # The old point models, one with intervals: y_hat, then the intervals.
    for name, bands in (("model_v1", []), ("model_v1_cycle", BANDS[:2])):
        out = Forecaster.load(FIXTURES / name).predict(history)
        assert list(out.columns) == ["unique_id", "ds", "y_hat", *bands] == saved_columns(FIXTURES / name)


def test_saved_columns_come_from_the_settings_alone(tiny_frame, tmp_path):
    forecaster = tiny_forecaster(
        tiny_frame, intervals=[80, 95], data=VAL, loss="student_t", quantiles=[0.05, 0.5, 0.95]
    )
    folder = forecaster.save(tmp_path / "model")
    expected = list(forecaster.predict(tiny_frame).columns)
    (folder / WEIGHTS).unlink()  # no weights, no forecast: the settings and the intervals say it
    assert (
        saved_columns(folder)
        == expected
        == ["unique_id", "ds", "y_hat", "y_hat_q05", "y_hat_q50", "y_hat_q95", *BANDS]
    )
    assert ForecasterSettings(**json.loads((folder / SETTINGS).read_text())) == forecaster.settings
    assert asdict(forecaster.settings)["quantiles"] == [0.05, 0.5, 0.95]


# -- the promotion gate ---------------------------------------------------------------------------
GATE = "contract-gate"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Versions of one model: 1 quantile with 80% intervals, 2 point without, 3 point."""
    root = tmp_path_factory.mktemp("gate")
    frame = synthetic_long(n_series=6, length=200, seed=1)
    data = root / "history.parquet"
    frame.to_parquet(data)
    models = [
        tiny_forecaster(frame, seed=0, intervals=[80], data=VAL, **HEADS["quantile"]),
        tiny_forecaster(frame, seed=1),
        tiny_forecaster(frame, seed=2),
    ]
    uri = store_with_models(root, models, frame, GATE, L, alias=None)
    return root, uri, data


@pytest.fixture
def gate_client(registry, monkeypatch):
    _, uri, _ = registry
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield mlflow.MlflowClient(uri)
    mlflow.set_tracking_uri(None)


def _aliases(client, champion: str, candidate: str) -> None:
    client.set_registered_model_alias(GATE, "champion", champion)
    client.set_registered_model_alias(GATE, "candidate", candidate)


def _last_gate_run(client) -> mlflow.entities.Run:
    experiment = client.get_experiment_by_name("promotion")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])[0]


def test_the_gate_refuses_a_candidate_that_drops_columns(
    registry, gate_client, tmp_path, monkeypatch, capsys
):
    root, _, data = registry
    _aliases(gate_client, champion="1", candidate="2")
    args = [f"name={GATE}", f"input={data}", "n_windows=2", "season_length=24"]
    args += [f"paths.root_dir={root}", f"paths.log_dir={tmp_path}"]
    result = run_inprocess("promote.py", args, tmp_path, monkeypatch, capsys)
    assert result.code == ConfigError.exit_code == 2, result.stderr[-3000:]
    dropped = [*QUANTILES, "y_hat_lo_80", "y_hat_hi_80"]
    assert result.last_line == (
        f"error: candidate version 2 would drop output column(s) {dropped} that champion version 1 "
        "writes (it writes ['unique_id', 'ds', 'y_hat']): readers of the forecast would lose them; "
        "promote it anyway with force=true"
    )
    assert str(gate_client.get_model_version_by_alias(GATE, "champion").version) == "1"
    run = _last_gate_run(gate_client)
    assert run.info.status == "FAILED" and run.data.tags["decision"] == "refused"
    assert run.data.tags["columns_check"] == "refused" and run.data.tags["columns_dropped"] == ",".join(
        dropped
    )
    assert run.data.tags["champion_columns"] == ",".join(["unique_id", "ds", "y_hat", *dropped])
    assert "candidate/mase" not in run.data.metrics  # refused before any backtest


def test_force_promotes_it_with_a_warning_and_adding_columns_passes(registry, gate_client, caplog):
    root, _, data = registry
    kwargs = dict(name=GATE, input_path=str(data), root_dir=str(root), n_windows=2, season_length=24)
    _aliases(gate_client, champion="1", candidate="2")
    with caplog.at_level(logging.WARNING, logger="forecast.promotion"):
        forced = promote(force=True, **kwargs)
    assert forced.promoted and str(gate_client.get_model_version_by_alias(GATE, "champion").version) == "2"
    warning = (
        "force=true: candidate version 2 drops output column(s) ['y_hat_q10', 'y_hat_q50', 'y_hat_q90', "
    )
    assert any(r.levelno == logging.WARNING and r.getMessage().startswith(warning) for r in caplog.records)
    tags = _last_gate_run(gate_client).data.tags
    assert tags["columns_check"] == "forced" and tags["columns_dropped"].startswith("y_hat_q10,")
    # Back to the quantile model: it only adds columns, so the check passes (force for the scores).
    _aliases(gate_client, champion="2", candidate="1")
    assert promote(force=True, **kwargs).promoted
    tags = _last_gate_run(gate_client).data.tags
    assert tags["columns_check"] == "ok" and tags["columns_dropped"] == ""
    # Two point models: the same columns, the scores decide (no force).
    _aliases(gate_client, champion="3", candidate="2")
    promote(**kwargs)
    assert _last_gate_run(gate_client).data.tags["columns_check"] == "ok"


# -- end to end: the champion changes head, the readers do not notice ----------------------------
E2E = "contract-e2e"


@pytest.mark.slow
def test_readers_keep_working_when_the_champion_changes_head(isolated_mlflow, tmp_path):
    """A point champion, then a quantile one, then a distribution one (each promoted by the gate,
    whose columns check passes: they only add columns), forecast on three days: the Hive read of
    docs/batch.md, the pyfunc and the backtest table always have y_hat."""
    frame = synthetic_long(n_series=4, length=120, seed=3)  # hourly, 2024-01-01 .. 2024-01-05 23:00
    data = tmp_path / "history.parquet"
    frame.to_parquet(data, index=False)
    heads = [
        tiny_forecaster(frame, seed=0),
        tiny_forecaster(frame, seed=1, intervals=[80], data={"val_size": 48}, **HEADS["quantile"]),
        tiny_forecaster(frame, seed=2, intervals=[80], data={"val_size": 48}, **HEADS["student_t"]),
    ]
    days = ["2024-01-03", "2024-01-04", "2024-01-05"]
    forecasts = tmp_path / "forecasts"
    champion = f"models:/{E2E}@champion"
    for i, (model, day) in enumerate(zip(heads, days, strict=True)):
        if i == 0:
            register_forecaster(model, frame, E2E, tmp_path, L)  # the first champion
        else:
            register_forecaster(model, frame, E2E, tmp_path, L, alias="candidate")
            decision = promote(E2E, str(data), str(tmp_path), n_windows=2, season_length=24, force=True)
            assert decision.promoted
            run = mlflow.MlflowClient().get_run(decision.run_id)
            assert run.data.tags["columns_check"] == "ok", run.data.tags
        columns = model.output_columns
        run_scheduled_forecast(
            champion,
            str(data),
            f"{forecasts}/as_of={{as_of}}/forecast.parquet",
            str(tmp_path),
            as_of=day,
            progress="none",
        )
        # The pyfunc of the champion, as a downstream service loads it.
        served = mlflow.pyfunc.load_model(champion).predict(frame)
        assert list(served.columns) == columns and served["y_hat"].notna().all()
        pd.testing.assert_frame_equal(served, model.predict(frame))
        # The backtest table of the champion.
        result = run_backtest(
            champion,
            str(data),
            str(tmp_path / f"backtest-{i}.parquet"),
            str(tmp_path),
            n_windows=2,
            season_length=24,
        )
        table = pd.read_parquet(tmp_path / f"backtest-{i}.parquet")
        assert (
            list(table.columns)
            == ["unique_id", "cutoff", "ds", "y", *columns[2:]]
            == list(result.table.columns)
        )
        assert table["y_hat"].notna().all()

    # The downstream read, exactly as docs/batch.md shows it: every day, y_hat never null.
    read = pd.read_parquet(forecasts, partitioning="hive")
    assert sorted(read["as_of"].astype(str).unique()) == days
    assert read.groupby(read["as_of"].astype(str)).size().tolist() == [4 * H] * 3
    assert read["y_hat"].notna().all() and read["y_hat"].dtype == np.float32
    # With the union of the schemas (docs/batch.md): the later champions' columns too.
    files = ds.dataset(forecasts, partitioning="hive")
    schema = pa.unify_schemas(
        [f.physical_schema for f in files.get_fragments()] + [files.partitioning.schema]
    )
    every = pd.read_parquet(forecasts, partitioning="hive", schema=schema)
    every["as_of"] = every["as_of"].astype(str)
    assert set(heads[2].output_columns) <= set(every.columns)
    assert every["y_hat"].notna().all()
    assert every.loc[every["as_of"] == days[0], "y_hat_q50"].isna().all()
    later = every[every["as_of"] != days[0]]
    assert later[[*QUANTILES, "y_hat_lo_80", "y_hat_hi_80"]].notna().all().all()
    np.testing.assert_array_equal(later["y_hat"], later["y_hat_q50"])
