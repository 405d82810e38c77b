"""Ensembles as one model: every runtime forecasts the mean (or median) of its members' forecasts,
and training K seeds gives one registered model whose run shows each member."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from model_helpers import tiny_forecaster
from pipeline_helpers import batch_forecast, register_forecaster

import forecast
from forecast.backtest import backtest_frame
from forecast.data import synthetic_long
from forecast.ensembles import combine_forecasters
from forecast.errors import ConfigError
from forecast.forecaster import Forecaster
from forecast.models.ensemble import combine_outputs

L, H = 24, 6
QUANTILES = [0.1, 0.5, 0.9]
COLUMNS = ["y_hat", "y_hat_q10", "y_hat_q50", "y_hat_q90"]


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return synthetic_long(n_series=6, length=120, seed=3)


@pytest.fixture(scope="module")
def members(history) -> list[Forecaster]:
    """Three seeds of one quantile model (untrained: the code paths, not the accuracy)."""
    return [tiny_forecaster(history, seed=s, loss="quantile", quantiles=QUANTILES) for s in range(3)]


def combined(frames: list[pd.DataFrame], how: str) -> pd.DataFrame:
    """The element-wise median or mean of the members' forecast columns."""
    stacked = np.stack([f[COLUMNS].to_numpy() for f in frames])
    out = frames[0].copy()
    out[COLUMNS] = np.median(stacked, axis=0) if how == "median" else stacked.mean(axis=0)
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_the_combination_is_numpys_median_and_mean(k):
    stacked = torch.randn(k, 7, 6, 3)
    np.testing.assert_allclose(
        combine_outputs(stacked, "median"), np.median(stacked.numpy(), axis=0), rtol=1e-6
    )
    np.testing.assert_allclose(
        combine_outputs(stacked, "mean"), stacked.numpy().mean(axis=0), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("how", ["median", "mean"])
def test_an_ensemble_forecasts_the_combination_of_its_members(members, history, tmp_path, how):
    ensemble = combine_forecasters(members, how)
    expected = combined([m.predict(history) for m in members], how)
    got = ensemble.predict(history)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-5, atol=1e-4)
    assert (np.diff(got[COLUMNS[1:]].to_numpy(), axis=1) >= 0).all()  # quantiles stay monotone

    ensemble.save(tmp_path / "saved", export=["onnx"])
    for runtime in ("torch", "onnx"):
        again = Forecaster.load(tmp_path / "saved", runtime=runtime)
        assert again.runtime == runtime and again.settings.net == "ensemble"
        pd.testing.assert_frame_equal(
            again.predict(history), expected, check_exact=False, rtol=1e-5, atol=1e-4
        )

    # The backtest's table: each window forecast as the members' combination.
    tables = [backtest_frame(m, history, 3, season_length=24).table for m in members]
    table = backtest_frame(ensemble, history, 3, season_length=24).table
    np.testing.assert_allclose(
        table[COLUMNS].to_numpy(),
        combined(tables, how)[COLUMNS].to_numpy(),
        rtol=1e-5,
        atol=1e-4,
    )


@pytest.mark.parametrize("loss", ["student_t", "negbin"])
@pytest.mark.parametrize("how", ["mean", "median"])
def test_a_distribution_ensemble_combines_its_members_quantiles_level_by_level(history, tmp_path, loss, how):
    """Each member's exact median and quantiles, combined per level (Vincentization for the
    mean): y_hat is the combination of the members' medians, in every runtime."""
    frame = history.assign(y=np.round(history["y"] - history["y"].min())) if loss == "negbin" else history
    members = [tiny_forecaster(frame, seed=s, loss=loss, quantiles=QUANTILES) for s in range(3)]
    ensemble = combine_forecasters(members, how)
    expected = combined([m.predict(frame) for m in members], how)
    if loss == "negbin":  # counts: the combination is rounded to whole counts, as a member's are
        expected[COLUMNS] = np.round(expected[COLUMNS])
    got = ensemble.predict(frame)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-5, atol=1e-4)
    assert (np.diff(got[COLUMNS[1:]].to_numpy(), axis=1) >= 0).all()
    if loss == "negbin":
        return
    ensemble.save(tmp_path / "saved", export=["onnx"])
    again = Forecaster.load(tmp_path / "saved", runtime="onnx")
    assert again.runtime == "onnx"
    pd.testing.assert_frame_equal(again.predict(frame), expected, check_exact=False, rtol=1e-5, atol=1e-4)
    tables = [backtest_frame(m, frame, 3, season_length=24).table for m in members]
    table = backtest_frame(ensemble, frame, 3, season_length=24).table
    np.testing.assert_allclose(
        table[COLUMNS].to_numpy(), combined(tables, how)[COLUMNS].to_numpy(), rtol=1e-5, atol=1e-4
    )


def test_a_distribution_ensemble_is_scored_on_its_combined_forecast():
    """The metrics of an ensemble of Student-t heads: the point is the members' medians
    combined, the likelihood the members' equal mixture, the quantiles the combined ones."""
    from scipy import stats

    from forecast.models.distributions import StudentT
    from forecast.models.ensemble import CombinedDistribution, distribution_of

    g = torch.Generator().manual_seed(0)
    k, b, h = 3, 5, 4
    member = [  # loc, scale, df of each member, drawn apart: their mean and median differ
        [
            torch.randn(b, h, 1, generator=g),
            0.5 + torch.rand(b, h, 1, generator=g),
            2.5 + 5 * torch.rand(b, h, 1, generator=g),
        ]
        for _ in range(k)
    ]
    params = torch.cat([c for m in member for c in m], dim=-1)  # (B, H, K x 3): members side by side
    y, loc, scale = torch.randn(b, h, generator=g), torch.full((b, 1), 2.0), torch.full((b, 1), 3.0)
    members = params.reshape(b, h, k, 3).numpy().astype(np.float64)
    mu, sigma, df = members[..., 0], members[..., 1], members[..., 2]
    pdf = stats.t.pdf(y.numpy()[..., None], df, mu, sigma).mean(axis=-1)
    for how, pick in (("mean", np.mean), ("median", np.median)):
        dist = CombinedDistribution(StudentT(), k, how)
        assert isinstance(
            distribution_of({"output": "student_t", "members": [{}] * k, "combine": how}),
            CombinedDistribution,
        )
        np.testing.assert_allclose(dist.nll(params, y, loc, scale).numpy(), -np.log(pdf), rtol=1e-4)
        np.testing.assert_allclose(
            dist.point_raw(params, loc, scale).numpy(), pick(mu, axis=-1) * 3.0 + 2.0, rtol=1e-5
        )
        q = dist.quantiles(params.numpy(), [0.1, 0.9])
        each = np.stack(
            [
                stats.t.ppf([0.1, 0.9], df[..., i, None], mu[..., i, None], sigma[..., i, None])
                for i in range(k)
            ]
        )
        np.testing.assert_allclose(q, pick(each, axis=0), rtol=1e-5, atol=1e-6)
        crps = dist.crps(params, y, loc, scale)
        assert crps.shape == (b, h) and bool((crps > 0).all())


def test_the_pyfunc_and_both_batch_engines_forecast_the_ensemble(members, history, tmp_path, isolated_mlflow):
    ensemble = combine_forecasters(members)
    expected = combined([m.predict(history) for m in members], "mean")  # the default
    uri = register_forecaster(ensemble, history, "ens", tmp_path, L)
    pyfunc = mlflow.pyfunc.load_model(uri).predict(history)
    np.testing.assert_allclose(pyfunc[COLUMNS].to_numpy(), expected[COLUMNS].to_numpy(), rtol=1e-5, atol=1e-4)
    for name, options in (("local", {}), ("streamed", {"chunk_rows": 250})):
        out = batch_forecast(
            uri, history, tmp_path / f"{name}.parquet", tmp_path / f"{name}-out.parquet", **options
        )
        got = pd.read_parquet(out).sort_values(["unique_id", "ds"], ignore_index=True)
        np.testing.assert_allclose(
            got[COLUMNS].to_numpy(), expected[COLUMNS].to_numpy(), rtol=1e-5, atol=1e-4
        )


@pytest.mark.slow
def test_the_ray_engine_forecasts_the_ensemble(members, history, tmp_path, isolated_mlflow):
    pytest.importorskip("ray")
    from forecast.batch import run_batch_forecast
    from forecast.engines.request import RayOptions

    ensemble = combine_forecasters(members)
    expected = combined([m.predict(history) for m in members], "mean")  # the default
    uri = register_forecaster(ensemble, history, "ens-ray", tmp_path, L)
    source = tmp_path / "history.parquet"
    history.to_parquet(source, index=False)
    out = tmp_path / "ray-out"
    ray = RayOptions(num_cpus=2, rows_per_partition=300, init_kwargs={"object_store_memory": 200 * 2**20})
    run_batch_forecast(uri, str(source), str(out), str(tmp_path), engine="ray", ray=ray, progress="none")
    got = pd.read_parquet(out).sort_values(["unique_id", "ds"], ignore_index=True)
    np.testing.assert_allclose(got[COLUMNS].to_numpy(), expected[COLUMNS].to_numpy(), rtol=1e-5, atol=1e-4)


def test_members_that_cannot_be_combined_are_one_line_errors(members, history):
    other_horizon = tiny_forecaster(history, horizon=4, loss="quantile", quantiles=QUANTILES)
    with pytest.raises(ConfigError, match="differ in horizon"):
        combine_forecasters([members[0], other_horizon])
    other_data = tiny_forecaster(
        synthetic_long(n_series=6, length=120, seed=9), loss="quantile", quantiles=QUANTILES
    )
    with pytest.raises(ConfigError, match="scaler statistics"):
        combine_forecasters([members[0], other_data])
    normal = tiny_forecaster(history, loss="normal", quantiles=QUANTILES)
    student = tiny_forecaster(history, loss="student_t", quantiles=QUANTILES)
    with pytest.raises(ConfigError, match="output 'student_t' != 'normal'"):
        combine_forecasters([normal, student])
    with pytest.raises(ConfigError, match="ensemble.combine"):
        combine_forecasters(members, "mode")


TINY = {
    "freq": "h",
    "input_size": 24,
    "horizon": 6,
    "hidden_size": 8,
    "head_hidden": 8,
    "segment_len": 6,
    "max_epochs": 2,
    "limit_train_batches": 3,
    "intervals": [80],
    "enable_progress_bar": False,
    "seed": 11,
    "loss": "quantile",
    "quantiles": QUANTILES,
}


@pytest.mark.slow
@pytest.mark.parametrize("store", ["memory", "mapped"])
def test_member_i_is_the_single_model_of_seed_plus_i(history, tmp_path, store):
    """So K single runs of seeds s, s + 1, ... (a bench's seed ensemble) are the ensemble's members,
    also where training draws its windows from a mapped store (data larger than memory)."""
    path = tmp_path / "history.parquet"
    history.to_parquet(path, index=False)
    options = {**TINY, "store": store, "cache_dir": str(tmp_path / "cache")}
    ensemble = forecast.Model(**options, members=2).fit(path).forecaster_.net
    # Member 0 is built and trained as the job's single model is; member 1 is seeded on its own.
    single = forecast.Model(**{**options, "seed": TINY["seed"] + 1}).fit(path).forecaster_.net
    for a, b in zip(ensemble.members[1].state_dict().values(), single.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["quantile", "student_t"])
def test_training_k_seeds_gives_one_model_whose_run_shows_each_member(
    history, tmp_path, isolated_mlflow, loss
):
    options = {**TINY, "loss": loss}
    model = forecast.Model(**options, members=3).fit(
        history, experiment="ens", register="ens-model", root_dir=tmp_path
    )
    f = model.forecaster_
    assert f.settings.net == "ensemble" and len(f.net.members) == 3
    assert f.settings.config["train"]["members"] == 3
    assert f.intervals is not None and f.intervals.levels == [80]  # calibrated on the ensemble's residuals
    client = mlflow.MlflowClient()
    run = client.get_run(model.run_id_)
    assert {"member0/val_loss", "member1/val_loss", "member2/val_loss", "val/loss", "test/mae"} <= set(
        run.data.metrics
    )
    children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{model.run_id_}'")
    assert sorted(c.data.tags["ensemble.seed"] for c in children) == ["11", "12", "13"]
    assert all("val/loss" in c.data.metrics for c in children)
    # The registered model is the ensemble, and forecasts what the member nets combine to.
    loaded = forecast.Model.load("models:/ens-model@candidate", root_dir=tmp_path)
    pd.testing.assert_frame_equal(loaded.predict(history), model.predict())
    nets = [
        Forecaster(
            net,
            f.scaler,
            f.settings.__class__(**{**f.settings.__dict__, "net": "recurrent", "net_params": p}),
        )
        for net, p in zip(f.net.members, f.settings.net_params["members"], strict=True)
    ]
    expected = combined([n.predict(history) for n in nets], "mean")  # the default
    np.testing.assert_allclose(
        model.predict()[COLUMNS].to_numpy(), expected[COLUMNS].to_numpy(), rtol=1e-5, atol=1e-4
    )
