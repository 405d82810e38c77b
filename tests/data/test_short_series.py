"""Short and new series: padded, masked training windows; padded forecasts; empty series."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from forecast.data import SeriesDataModule, synthetic_long
from forecast.data.splits import split_points
from forecast.data.validation import validate_long_frame
from forecast.engines.chunks import fast_block
from forecast.engines.local import forecast_file
from forecast.errors import ConfigError, DataValidationError
from forecast.forecaster import Forecaster
from forecast.models import ForecastModule, RecurrentForecaster
from forecast.training import build_forecaster

L, H = 24, 6  # validation and test parts default to the horizon: 6 steps each
LONG = 120
# id -> length: long series, short ones with every part, one without test, one with training
# only, and one too short for a training window (H + 1 = 7 steps needed).
SHORT = {"short20": 20, "short40": 40, "no_test16": 16, "train_only10": 10, "tiny5": 5}


def one_series(uid: str, length: int, seed: int) -> pd.DataFrame:
    """One synthetic hourly series named `uid`, ending on the same hour as the others."""
    frame = synthetic_long(n_series=1, length=length, seed=seed, start="2024-01-01")
    shift = pd.Timedelta(hours=LONG - length)  # every series ends together, as in a real table
    return frame.assign(unique_id=uid, ds=frame["ds"] + shift)


def mixed_frame(n_long: int = 3) -> pd.DataFrame:
    """`n_long` series of LONG steps and the SHORT ones."""
    parts = [one_series(f"long{i}", LONG, seed=i) for i in range(n_long)]
    parts += [one_series(uid, n, seed=10 + k) for k, (uid, n) in enumerate(SHORT.items())]
    return pd.concat(parts, ignore_index=True)


def datamodule(frame: pd.DataFrame, **kw) -> SeriesDataModule:
    dm = SeriesDataModule(frame=frame, freq="h", input_size=L, horizon=H, **kw)
    dm.setup()
    return dm


def window_positions(dm: SeriesDataModule, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(series index, first target position within its series) of every window of `split`."""
    a = dm.arrays
    starts = dm.datasets[split].starts.astype(np.int64)
    series = np.searchsorted(a.offsets, starts + L, side="right") - 1
    return series, starts - a.offsets[series] + L


def whole_split(dm: SeriesDataModule, split: str) -> dict[str, torch.Tensor]:
    dataset = dm.datasets[split]
    return dataset.__getitems__(list(range(len(dataset))))


# -- splits and windows ------------------------------------------------------------------------
def test_split_points_serve_training_then_validation_then_test():
    lengths = np.array([120, 19, 18, 13, 12, 7])
    val_start, test_start = split_points(lengths, horizon=6, val_size=6, test_size=6)
    # 19 = 7 (one training window) + 6 + 6 has all parts; 18 loses its test part, 13 keeps
    # validation; 12 and 7 train only (their parts start at their length: empty).
    assert val_start.tolist() == [108, 7, 12, 7, 12, 7]
    assert test_start.tolist() == [114, 13, 18, 13, 12, 7]
    # test_size=0: no series has a test part, validation still needs its steps.
    val0, test0 = split_points(lengths, horizon=6, val_size=6, test_size=0)
    assert val0.tolist() == [114, 13, 12, 7, 12, 7] and test0.tolist() == lengths.tolist()


def test_short_series_train_on_padded_masked_windows():
    frame = mixed_frame()
    dm = datamodule(frame)
    ids = list(dm.ids)
    series, first_target = window_positions(dm, "train")
    batch = whole_split(dm, "train")
    for uid in ("short20", "short40", "no_test16", "train_only10"):
        k = ids.index(uid)
        train_steps = dm.val_start[k]
        mine = np.flatnonzero(series == k)
        # Every window with at least one observed input step: first targets 1 .. T - H.
        assert first_target[mine].tolist() == list(range(1, train_steps - H + 1)), uid
        raw = frame.loc[frame.unique_id == uid, "y"].to_numpy()
        loc, scale = dm.arrays.loc[k], dm.arrays.scale[k]
        for w, p in zip(mine, first_target[mine], strict=True):
            observed = batch["x_mask"][w].numpy()
            assert observed.tolist() == [False] * (L - p) + [True] * p  # padding in front only
            assert (batch["x"][w].numpy()[: L - p] == 0).all()
            np.testing.assert_allclose(batch["x"][w].numpy()[L - p :] * scale + loc, raw[:p], rtol=1e-5)
            np.testing.assert_allclose(batch["y"][w].numpy() * scale + loc, raw[p : p + H], rtol=1e-5)
            assert batch["y_mask"][w].all()  # targets are never padding


def test_no_target_crosses_a_split_and_parts_too_short_are_empty():
    dm = datamodule(mixed_frame())
    n = dm.arrays.lengths
    full = dm.val_start >= L + H
    bounds = {
        "train": (np.where(full, L, 1), dm.val_start),
        "val": (dm.val_start, dm.test_start),
        "test": (dm.test_start, n),
    }
    for split, (lo, hi) in bounds.items():
        series, first = window_positions(dm, split)
        assert (first >= lo[series]).all() and (first + H <= hi[series]).all(), split
        assert (first >= 1).all(), split  # at least one observed input step
        counts = np.bincount(series, minlength=len(n))
        assert (counts == np.maximum(hi - lo - H + 1, 0)).all(), split
    ids = list(dm.ids)
    no_val = {ids[k] for k in np.flatnonzero(dm.test_start - dm.val_start < H)}
    no_test = {ids[k] for k in np.flatnonzero(n - dm.test_start < H)}
    assert no_val == {"train_only10"} and no_test == {"train_only10", "no_test16"}


def test_windows_of_long_series_are_unchanged():
    frame = mixed_frame()
    long_only = datamodule(frame[frame.unique_id.str.startswith("long")])
    mixed = datamodule(frame)
    assert not any(d.padded for d in long_only.datasets.values())  # the fast path, as before
    for split in ("train", "val", "test"):
        series, first = window_positions(mixed, split)
        keep = np.flatnonzero(np.isin(mixed.ids[series], long_only.ids))
        ref_series, ref_first = window_positions(long_only, split)
        np.testing.assert_array_equal(mixed.ids[series[keep]], long_only.ids[ref_series])
        np.testing.assert_array_equal(first[keep], ref_first)
        got = mixed.datasets[split].__getitems__(keep.tolist())
        expected = whole_split(long_only, split)
        for key in ("x", "x_mask", "y", "y_mask", "loc", "scale", "mase_scale"):
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=f"{split} {key}")
    assert len(long_only.datasets["train"]) == 3 * (LONG - 2 * H - L - H + 1)


def test_padded_windows_all_adds_every_series_start_windows():
    frame = mixed_frame()
    default, every = datamodule(frame), datamodule(frame, padded_windows="all")
    series, first = window_positions(every, "train")
    ref_series, ref_first = window_positions(default, "train")
    for k in range(len(every.ids)):
        # Every series now trains from its first target on: 1 .. T - H.
        assert first[series == k].tolist() == list(range(1, every.val_start[k] - H + 1))
    # The windows of the default are all still there; the added ones are the padded starts.
    windows = set(zip(series.tolist(), first.tolist(), strict=True))
    before = set(zip(ref_series.tolist(), ref_first.tolist(), strict=True))
    added = windows - before
    assert before <= windows and len(added) == 3 * (L - 1)  # the 3 long series' first L - 1 targets
    assert {p for _, p in added} == set(range(1, L))
    for split in ("val", "test"):
        np.testing.assert_array_equal(every.datasets[split].starts, default.datasets[split].starts)
    with pytest.raises(ConfigError, match="data.padded_windows must be 'short' or 'all'"):
        SeriesDataModule(frame=frame, input_size=L, horizon=H, padded_windows="some")


def test_series_too_short_for_a_training_window_are_left_out_with_a_count(caplog):
    with caplog.at_level(logging.WARNING, logger="forecast.data.datamodule"):
        dm = datamodule(mixed_frame())
    assert dm.left_out == ("tiny5",) and "tiny5" not in dm.ids
    assert "left 1 of 8 series out of training: fewer than horizon + 1 = 7 steps" in caplog.text
    assert len(dm.scaler.stats) == 7  # the model knows the series it trained on
    assert len(dm.history(None)) == 3 * LONG + sum(SHORT.values()) - SHORT["tiny5"]


def test_data_too_short_for_a_window_or_a_part_is_an_error():
    with pytest.raises(DataValidationError, match=r"no series has the horizon \+ 1 = 7 steps.*longest has 6"):
        datamodule(one_series("a", 6, 0))
    with pytest.raises(DataValidationError, match=r"validation part: that takes .* = 13 steps"):
        datamodule(one_series("a", 12, 0))
    with pytest.raises(DataValidationError, match=r"test part: .* = 19 steps.*data.test_size=0"):
        datamodule(one_series("a", 18, 0))
    assert len(datamodule(one_series("a", 18, 0), test_size=0).datasets["val"]) == 1


def test_history_cuts_each_series_at_its_own_parts():
    dm = datamodule(mixed_frame())
    lengths = dm.history("test").groupby("unique_id").size()
    assert lengths["long0"] == LONG - H and lengths["short20"] == 20 - H
    assert lengths["no_test16"] == 16 and lengths["train_only10"] == 10  # no test part: whole
    assert dm.history("val").groupby("unique_id").size()["short40"] == 40 - 2 * H


def test_scaler_comes_from_the_training_part_of_short_series():
    frame = mixed_frame()
    changed = frame.copy()
    rows = changed.unique_id == "short20"
    changed.loc[rows & (changed.groupby("unique_id").cumcount() >= 8), "y"] *= 1000  # val + test
    pd.testing.assert_frame_equal(datamodule(frame).scaler.stats, datamodule(changed).scaler.stats)


# -- series with nothing observed ----------------------------------------------------------------
def with_empty(frame: pd.DataFrame, *uids: str) -> pd.DataFrame:
    return frame.assign(y=frame.y.where(~frame.unique_id.isin(uids)))


def test_all_missing_series_is_an_error_naming_it_or_dropped_with_a_count(caplog):
    frame = with_empty(synthetic_long(n_series=3, length=40, seed=0), "s1")
    with pytest.raises(DataValidationError, match=r"1 of 3 series have no observed value in 'y'.*'s1'"):
        validate_long_frame(frame, missing="mask")
    with caplog.at_level(logging.WARNING, logger="forecast.data.validation"):
        out = validate_long_frame(frame, missing="mask", empty_series="drop")
    assert out.dropped_ids == ("s1",) and set(out.frame.unique_id) == {"s0", "s2"}
    assert "dropped 1 series with no observed target" in caplog.text
    with pytest.raises(DataValidationError, match="3 of 3 series .* the table holds no data"):
        validate_long_frame(with_empty(frame, "s0", "s2"), missing="mask", empty_series="drop")
    with pytest.raises(ConfigError, match="data.empty_series must be"):
        validate_long_frame(frame, empty_series="sometimes")


def test_training_refuses_or_drops_all_missing_series():
    frame = with_empty(mixed_frame(), "short40")
    with pytest.raises(DataValidationError, match="'short40'"):
        datamodule(frame, missing="mask")
    dm = datamodule(frame, missing="mask", empty_series="drop")
    assert "short40" not in dm.ids and np.isfinite(dm.arrays.loc).all()
    with pytest.raises(ConfigError, match="data.empty_series"):
        SeriesDataModule(frame=frame, input_size=L, horizon=H, empty_series="skip")


# -- the network ignores padded steps --------------------------------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"linear_skip": True},
        {"window_norm": True, "linear_skip": True, "segment_len": 5},
        {"window_norm": "last", "linear_skip": True, "segment_len": 4},
        {"cycle_len": 4, "n_series": 3, "linear_skip": True},
        {"segment_len": 4, "decoder": "segments", "cell": "gru"},
    ],
    ids=["plain", "skip", "revin-skip-ragged", "last-skip", "cycle", "segment-decoder"],
)
def test_padded_steps_carry_no_value_on_any_net_path(params):
    torch.manual_seed(0)
    net = RecurrentForecaster(input_size=L, horizon=H, hidden_size=8, head_hidden=8, **params).eval()
    x = torch.randn(4, L)
    observed = torch.arange(L)[None, :] >= torch.tensor([[0], [5], [L - 3], [L - 1]])  # padded fronts
    step, series = torch.tensor([3, 10, 17, 24]), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        clean = net(torch.where(observed, x, 0.0), observed, step, series)
        noisy = net(torch.where(observed, x, 100.0), observed, step, series)
    torch.testing.assert_close(noisy, clean, rtol=0, atol=0)
    assert torch.isfinite(clean).all()


# -- the forecast ----------------------------------------------------------------------------------
def trained_forecaster(**model) -> Forecaster:
    """An untrained net packaged with the scaler of the long series (known) and settings."""
    torch.manual_seed(0)
    frame = mixed_frame()
    dm = datamodule(frame[frame.unique_id.str.startswith("long")], missing="mask")
    params = {"hidden_size": 8, "head_hidden": 8, "segment_len": 4, "window_norm": True, **model}
    return build_forecaster(ForecastModule(input_size=L, horizon=H, **params), dm)


def short_history() -> pd.DataFrame:
    """Long (known) series, one known series cut to 10 steps, and new short series."""
    frame = mixed_frame()
    known_short = frame[frame.unique_id == "long2"].tail(10)
    rest = frame[(frame.unique_id != "long2") & (frame.unique_id != "tiny5")]
    new_one = frame[frame.unique_id == "tiny5"].head(1).assign(unique_id="one_point")
    return pd.concat([rest, known_short, new_one], ignore_index=True)


def padded_by_hand(history: pd.DataFrame) -> pd.DataFrame:
    """Every series extended to L steps with NaN rows in front: what padding must equal."""
    parts = []
    for uid, group in history.groupby("unique_id", sort=True):
        missing = L - len(group)
        if missing > 0:
            before = group["ds"].iloc[0] - pd.to_timedelta(np.arange(missing, 0, -1), unit="h")
            group = pd.concat([pd.DataFrame({"unique_id": uid, "ds": before, "y": np.nan}), group])
        parts.append(group)
    return pd.concat(parts, ignore_index=True)


def test_forecaster_pads_short_series_and_says_how_many(caplog):
    f = trained_forecaster()
    history = short_history()
    with caplog.at_level(logging.INFO, logger="forecast.forecaster"):
        out = f.predict(history)
    # New short20, no_test16, train_only10 and one_point, and known long2 cut to 10: all < 24.
    assert "5 series were shorter than the input window (24 steps)" in caplog.text
    assert sorted(out.unique_id.unique()) == sorted(history.unique_id.unique())
    assert np.isfinite(out.y_hat).all()
    # Padding is the same forecast as the history with explicit missing steps in front.
    pd.testing.assert_frame_equal(out, f.predict(padded_by_hand(history)))


def test_forecast_refuses_series_with_nothing_observed_in_their_window():
    f = trained_forecaster()
    history = short_history()
    history.loc[history.unique_id == "one_point", "y"] = np.nan  # no observed point at all
    stale = history.unique_id == "long0"
    history.loc[stale & (history.groupby("unique_id").cumcount() >= LONG - L), "y"] = np.nan
    with pytest.raises(DataValidationError, match=r"^2 series have no observed value in their last 24 steps"):
        f.predict(history)
    with pytest.raises(DataValidationError, match=r"'long0', 'one_point'"):
        f.predict(history)


def test_streamed_forecast_pads_short_series_on_the_fast_path(tmp_path, caplog):
    f = trained_forecaster()
    history = short_history().sort_values(["unique_id", "ds"], ignore_index=True)
    source = tmp_path / "history.parquet"
    history.to_parquet(source, index=False)
    assert fast_block(pq.read_table(source), f) is not None  # short series need no slow path
    with caplog.at_level(logging.INFO, logger="forecast.forecaster"):
        summary = forecast_file(
            f, source, tmp_path / "out.parquet", chunk_rows=50, batch_size=3, progress="none"
        )
    assert summary.padded == 5 and summary.series == history.unique_id.nunique()
    assert "5 series were shorter than the input window (24 steps)" in caplog.text
    expected = f.predict(history)
    pd.testing.assert_frame_equal(pd.read_parquet(summary.output), expected, check_exact=False, rtol=1e-6)


@pytest.mark.parametrize(
    "model",
    [
        {"window_norm": True, "linear_skip": True, "segment_len": 5},
        {"window_norm": "last", "segment_len": 1, "loss": "quantile", "quantiles": [0.1, 0.5, 0.9]},
        {"cycle_len": 24, "segment_len": 6},
    ],
    ids=["revin-skip-ragged", "last-quantiles", "cycle"],
)
def test_onnx_copy_agrees_on_padded_windows(model, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path = trained_forecaster(**model).save(tmp_path / "m", export=["onnx"])
    torch_f, onnx_f = Forecaster.load(path, runtime="torch"), Forecaster.load(path, runtime="onnx")
    history = short_history()
    expected, got = torch_f.predict(history), onnx_f.predict(history)
    pd.testing.assert_frame_equal(got.iloc[:, :2], expected.iloc[:, :2])
    scale = np.abs(expected.iloc[:, 2:].to_numpy()).max()
    np.testing.assert_allclose(got.iloc[:, 2:], expected.iloc[:, 2:], rtol=1e-5, atol=1e-5 * scale)


# -- training end to end ---------------------------------------------------------------------------
def compose_train(overrides: list[str], out: Path):
    """conf/train.yaml with overrides, as pipelines/train.py would see it (no MLflow)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        overrides = [*overrides, "~logger", f"paths.root_dir={out}", f"paths.output_dir={out}"]
        return compose("train", overrides=overrides)


def test_training_on_long_and_short_series_end_to_end(tmp_path):
    from pipeline_helpers import TINY_TRAIN

    from forecast.training import fit

    frame = mixed_frame(n_long=4)
    frame.to_parquet(tmp_path / "mixed.parquet", index=False)
    cfg = compose_train(
        [*TINY_TRAIN, f"data.path={tmp_path / 'mixed.parquet'}", "model.linear_skip=true", "seed=0"], tmp_path
    )
    result = fit(cfg)
    dm = result.datamodule
    series, _ = window_positions(dm, "train")
    trained_on = set(dm.ids[np.unique(series)])
    assert {"short20", "short40", "no_test16", "train_only10"} <= trained_on and dm.left_out == ("tiny5",)
    scores = {k: v for k, v in result.metrics.items() if k.startswith(("val/", "test/"))}
    assert {"val/loss", "test/loss", "test/smape"} <= set(scores)
    assert all(np.isfinite(v) for v in scores.values()), scores
    forecast = build_forecaster(result.module, dm).predict(frame)  # tiny5 too: new and short
    assert forecast.unique_id.nunique() == len(SHORT) + 4 and np.isfinite(forecast.y_hat).all()
