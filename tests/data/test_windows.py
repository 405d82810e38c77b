import numpy as np
import pandas as pd
import pytest

from forecast.data import SeriesDataModule, synthetic_long


@pytest.fixture
def dm(tiny_frame) -> SeriesDataModule:
    dm = SeriesDataModule(
        frame=tiny_frame, freq="h", input_size=24, horizon=12, season_length=24, batch_size=32
    )
    dm.setup()
    return dm


def test_window_counts_and_shapes(dm):
    # 200 steps: test targets [188, 200), val [176, 188), train targets end at 176.
    assert len(dm.datasets["train"]) == 6 * (176 - 24 - 12 + 1)
    assert len(dm.datasets["val"]) == 6 and len(dm.datasets["test"]) == 6
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (32, 24) and batch["y"].shape == (32, 12)
    assert batch["loc"].shape == (32,) and batch["mase_scale"].shape == (32,)
    assert batch["x"].dtype == batch["y"].dtype


def test_targets_never_cross_the_split(dm):
    a = dm.arrays
    for split, (lo, hi) in {"train": (24, 176), "val": (176, 188), "test": (188, 200)}.items():
        starts = dm.datasets[split].starts.astype(np.int64)
        series = np.searchsorted(a.offsets, starts, side="right") - 1
        first_target = starts - a.offsets[series] + 24
        assert first_target.min() >= lo, split
        assert (first_target + 12).max() <= hi, split


def test_windows_are_views_of_one_array(dm, tiny_frame):
    # The index is one int32 per window; the values are stored once.
    assert dm.datasets["train"].starts.dtype == np.int32
    assert dm.arrays.values.nbytes == len(tiny_frame) * 4
    item = dm.datasets["val"][0]
    loc, scale = item["loc"].item(), item["scale"].item()
    raw = tiny_frame[tiny_frame.unique_id == "s0"]["y"].to_numpy()
    np.testing.assert_allclose(item["x"].numpy() * scale + loc, raw[176 - 24 : 176], rtol=1e-5)
    np.testing.assert_allclose(item["y"].numpy() * scale + loc, raw[176:188], rtol=1e-5)


def test_scaler_is_fitted_on_training_rows_only(tiny_frame):
    changed = tiny_frame.copy()
    last = changed.groupby("unique_id").cumcount() >= 176  # val + test rows
    changed.loc[last, "y"] *= 1000
    stats = []
    for df in (tiny_frame, changed):
        dm = SeriesDataModule(frame=df, freq="h", input_size=24, horizon=12)
        dm.setup()
        stats.append(dm.scaler.stats)
    pd.testing.assert_frame_equal(stats[0], stats[1])


def test_stride_and_larger_eval_splits():
    df = synthetic_long(n_series=2, length=300, seed=0)
    dm = SeriesDataModule(frame=df, input_size=48, horizon=24, val_size=48, test_size=72, train_stride=4)
    dm.setup()
    assert len(dm.datasets["val"]) == 2 * (48 - 24 + 1)
    assert len(dm.datasets["test"]) == 2 * (72 - 24 + 1)
    assert len(dm.datasets["train"]) == 2 * ((300 - 120 - 48 - 24) // 4 + 1)


def test_missing_targets_are_masked():
    df = synthetic_long(n_series=2, length=120, seed=0)
    df.loc[50, "y"] = np.nan  # a training target of series s0
    dm = SeriesDataModule(frame=df, input_size=24, horizon=12, missing="mask")
    dm.setup()
    batch = dm.datasets["train"].__getitems__(list(range(len(dm.datasets["train"]))))
    assert not batch["x"].isnan().any() and not batch["y"].isnan().any()
    assert (~batch["y_mask"]).sum() > 0 and (~batch["x_mask"]).sum() > 0


def test_history_cuts_before_the_test_targets(dm, tiny_frame):
    hist = dm.history("test")
    assert len(hist) == 6 * 188
    assert len(dm.history("val")) == 6 * 176


def test_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        SeriesDataModule(input_size=4, horizon=2)


@pytest.mark.parametrize("freq", ["h", "MS", 3])
def test_history_gives_back_the_validated_table(freq, tmp_path):
    from forecast.data.validation import validate_long_frame

    frame = synthetic_long(n_series=3, length=40, seed=2)
    if freq == "MS":
        frame["ds"] = np.tile(pd.date_range("2001-01-01", periods=40, freq="MS").to_numpy(), 3)
    elif freq == 3:
        frame["ds"] = np.tile(np.arange(40) * 3 + 7, 3)
    frame = frame.sample(frac=1.0, random_state=0)  # any row order in, sorted out
    frame.to_parquet(tmp_path / "h.parquet", index=False)
    dm = SeriesDataModule(path=str(tmp_path / "h.parquet"), freq=freq, input_size=8, horizon=4)
    dm.setup()
    expected = validate_long_frame(frame, freq=freq).frame[["unique_id", "ds", "y"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(dm.history(None), expected, check_dtype=False)
    pd.testing.assert_frame_equal(
        dm.history("test", ids=["s2"]),
        expected[expected.unique_id == "s2"].head(36).reset_index(drop=True),
        check_dtype=False,
    )
    # The data module keeps arrays, not the table it read.
    assert not any(isinstance(v, pd.DataFrame) for v in vars(dm).values())
    with pytest.raises(KeyError, match="unknown series"):
        dm.history(ids=["nope"])
