"""Issue 22: training data past memory. A Parquet table read in chunks into a memory-mapped store
gives the data module exactly what the in-memory path gives (values, statistics, windows,
batches, history), refuses bad data with the in-memory path's errors, is reused by a second run,
rebuilt when the file changes, and never left half-built."""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import forecast.data.store as store_module
from forecast.data import SeriesDataModule, synthetic_long
from forecast.data.sharding import ShardSampler, shard_bounds
from forecast.data.windows import WindowIndex, window_starts
from forecast.errors import ConfigError, DataValidationError

SIZES = {"freq": "h", "input_size": 24, "horizon": 6, "season_length": 24}


def table(n_series: int = 12, length: int = 120, seed: int = 3) -> pd.DataFrame:
    """Series of several lengths (one too short to train, a few padded), some targets missing."""
    frame = synthetic_long(n_series=n_series, length=length, seed=seed)
    keep = frame.groupby("unique_id").cumcount() < frame["unique_id"].map(
        {f"s{i}": length - 11 * i for i in range(n_series)}
    )
    frame = frame[keep | (frame["unique_id"] == "s0")].reset_index(drop=True)
    frame.loc[frame.index[5::37], "y"] = np.nan
    short = frame[frame["unique_id"] == "s1"].head(4).assign(unique_id="s10a")  # horizon + 1 > 4
    return pd.concat([frame, short]).sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 150 rows: every table here is read in several pieces, series split across them."""
    monkeypatch.setattr(store_module, "CHUNK_ROWS", 150)


def both(path, cache, **options) -> tuple[SeriesDataModule, SeriesDataModule]:
    kw = {**SIZES, "missing": "mask", **options}
    memory = SeriesDataModule(path=str(path), store="memory", **kw)
    mapped = SeriesDataModule(path=str(path), store="mapped", cache_dir=str(cache), **kw)
    memory.setup()
    mapped.setup()
    return memory, mapped


def assert_same(memory: SeriesDataModule, mapped: SeriesDataModule) -> None:
    a, b = memory.arrays, mapped.arrays
    for field in ("values", "offsets", "loc", "scale", "mase_scale", "codes", "first_step"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert list(memory.ids) == list(mapped.ids) and memory.left_out == mapped.left_out
    assert memory.first_time.equals(mapped.first_time) and memory.data_freq == mapped.data_freq
    pd.testing.assert_frame_equal(memory.scaler.stats, mapped.scaler.stats)
    for split in ("train", "val", "test"):
        x, y = memory.datasets[split], mapped.datasets[split]
        np.testing.assert_array_equal(x.starts.astype(np.int64), y.starts.astype(np.int64))
        picks = list(range(0, len(x), 5))
        got, want = y.__getitems__(picks), x.__getitems__(picks)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key].numpy(), want[key].numpy(), err_msg=f"{split} {key}")
    pd.testing.assert_frame_equal(memory.history("test"), mapped.history("test"))


def test_mapped_store_serves_what_memory_serves(tmp_path, small_chunks):
    path = tmp_path / "data.parquet"
    table().to_parquet(path, row_group_size=100)
    memory, mapped = both(path, tmp_path / "cache")
    assert memory.left_out == ("s10a",)
    assert_same(memory, mapped)
    assert isinstance(mapped.datasets["train"].starts, WindowIndex)  # no list of every window


@pytest.mark.parametrize("layout", ["categorical ids", "rows shuffled inside each series"])
def test_ids_as_written_and_rows_out_of_time_order_serve_what_memory_serves(layout, tmp_path, small_chunks):
    """Text ids are read dictionary-encoded and clean chunks are checked in Arrow; a categorical
    id column (a dictionary in the file) and rows that need sorting (the pandas path) give the
    same data as the in-memory path."""
    frame = table(seed=7)
    if layout == "categorical ids":
        frame["unique_id"] = frame["unique_id"].astype("category")
    else:
        frame = frame.sample(frac=1.0, random_state=2).sort_values("unique_id", kind="stable")
    path = tmp_path / "data.parquet"
    frame.to_parquet(path, row_group_size=100)
    memory, mapped = both(path, tmp_path / "cache")
    assert_same(memory, mapped)


def test_a_parquet_folder_and_integer_steps(tmp_path, small_chunks):
    frame = table(seed=5)
    frame["ds"] = frame.groupby("unique_id").cumcount() * 2 + 10
    folder = tmp_path / "parts"
    folder.mkdir()
    ids = sorted(frame["unique_id"].unique())
    for i, part in enumerate((ids[:5], ids[5:9], ids[9:])):
        frame[frame["unique_id"].isin(part)].to_parquet(folder / f"part-{i}.parquet")
    memory, mapped = both(folder, tmp_path / "cache", freq=2)
    assert_same(memory, mapped)


def test_a_second_run_reuses_the_store_and_a_changed_file_rebuilds_it(tmp_path, monkeypatch):
    path, cache = tmp_path / "data.parquet", tmp_path / "cache"
    table().to_parquet(path)
    _, first = both(path, cache)
    built = []
    real = store_module._build
    monkeypatch.setattr(store_module, "_build", lambda *a: built.append(a) or real(*a))
    _, again = both(path, cache)
    assert built == [] and again.mapped.folder == first.mapped.folder
    _, other_split = both(path, cache, val_size=12)  # other statistics: another store
    assert len(built) == 1 and other_split.mapped.folder != first.mapped.folder

    table(seed=9).to_parquet(path)  # the same name, new data
    memory, rebuilt = both(path, cache)
    assert len(built) == 2 and rebuilt.mapped.folder not in (first.mapped.folder, other_split.mapped.folder)
    assert_same(memory, rebuilt)


def test_a_failed_build_leaves_no_store(tmp_path, monkeypatch):
    path, cache = tmp_path / "data.parquet", tmp_path / "cache"
    table().to_parquet(path)

    def broken(path, options, folder):
        folder.mkdir(parents=True)
        (folder / "values.f32").write_bytes(b"\0" * 64)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "_build", broken)
    with pytest.raises(OSError):
        both(path, cache)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


# The bad-input catalogue (tests/reliability/test_bad_input.py) through the mapped store: the
# same problems, the same one-line messages, whether the table is read in one chunk or several.
def _with(frame: pd.DataFrame, **edits) -> pd.DataFrame:
    frame = frame.copy()
    for (row, column), value in edits.get("cells", {}).items():
        frame.loc[row, column] = value
    return frame


def _bad_cases() -> list[tuple[str, pd.DataFrame, dict, str]]:
    base = synthetic_long(n_series=6, length=80, seed=2)
    gap = base.drop(index=[230, 231]).reset_index(drop=True)
    off_grid = _with(base, cells={(300, "ds"): base.loc[300, "ds"] + pd.Timedelta("30min")})
    nan = _with(base, cells={(300, "y"): np.nan})
    inf = _with(base, cells={(300, "y"): np.inf})
    dup = pd.concat([base, base.iloc[[300]]]).sort_values(["unique_id", "ds"], kind="stable")
    empty = base.assign(y=np.where(base["unique_id"] == "s4", np.nan, base["y"]))
    return [
        ("gap", gap, {}, r"not regular at frequency 'h'.*'s2'"),
        ("off-grid", off_grid, {}, r"not regular at frequency 'h'.*'s3'"),
        ("missing target", nan, {"missing": "error"}, r"target column 'y' has 1 missing value.*'s3'"),
        ("infinite target", inf, {}, r"infinite or out-of-range value.*'s3'"),
        ("duplicate pair", dup, {}, r"share a \(unique_id, ds\) pair.*'s3'"),
        ("empty series", empty, {"missing": "mask"}, r"1 of 6 series have no observed value.*'s4'"),
    ]


@pytest.mark.parametrize("chunks", [None, 100], ids=["one chunk", "chunks"])
@pytest.mark.parametrize(
    ("name", "frame", "options", "message"), _bad_cases(), ids=[c[0] for c in _bad_cases()]
)
def test_bad_data_is_refused_with_the_in_memory_message(
    name, frame, options, message, chunks, tmp_path, monkeypatch
):
    if chunks:
        monkeypatch.setattr(store_module, "CHUNK_ROWS", chunks)
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path)
    kw = {**SIZES, "missing": "mask", **options}
    errors = []
    for store in ("memory", "mapped"):
        dm = SeriesDataModule(path=str(path), store=store, cache_dir=str(tmp_path / "cache"), **kw)
        with pytest.raises(DataValidationError) as info:
            dm.setup()
        errors.append(str(info.value))
    assert all("\n" not in e and re.search(message, e) for e in errors), errors
    if not chunks:
        assert errors[0] == errors[1]  # read whole, the message is the same to the letter
    assert not [p for p in (tmp_path / "cache").glob("*") if not p.name.endswith(".lock")]


def test_rows_out_of_series_order_are_one_line(tmp_path, small_chunks):
    frame = table()
    late = frame["unique_id"] == "s2"
    pd.concat([frame[~late], frame[late]]).to_parquet(tmp_path / "unsorted.parquet")  # s2 after s9
    dm = SeriesDataModule(
        path=str(tmp_path / "unsorted.parquet"),
        store="mapped",
        cache_dir=str(tmp_path / "c"),
        missing="mask",
        **SIZES,
    )
    with pytest.raises(DataValidationError, match=r"ascending order, but series 's2' comes after 's[3-9]'"):
        dm.setup()


def test_row_numbers_in_errors_are_rows_of_the_whole_table(tmp_path, small_chunks):
    frame = table()
    frame["unique_id"] = frame["unique_id"].astype(object)
    frame.loc[400, "unique_id"] = None
    frame.to_parquet(tmp_path / "ids.parquet")
    for store in ("memory", "mapped"):
        dm = SeriesDataModule(
            path=str(tmp_path / "ids.parquet"), store=store, cache_dir=str(tmp_path), missing="mask", **SIZES
        )
        with pytest.raises(DataValidationError, match=r"empty values at rows 400$"):
            dm.setup()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dataset": "m4_hourly_sample"}, r"data.store=mapped reads data.path"),
        ({"path": "CSV"}, r"data.store=mapped reads Parquet, and .*data.csv is not"),
        (
            {"path": "PARQUET", "futr_exog": ["y2"]},
            r"covariates are declared \(\[.y2.\]\): set data.store=memory",
        ),
        ({"path": "PARQUET", "store": "disk"}, r"data.store must be auto, memory or mapped, got 'disk'"),
    ],
)
def test_mapped_store_config_errors(options, message, tmp_path):
    frame = table()
    frame.assign(y2=1.0).to_parquet(tmp_path / "data.parquet")
    frame.to_csv(tmp_path / "data.csv", index=False)
    paths = {"CSV": str(tmp_path / "data.csv"), "PARQUET": str(tmp_path / "data.parquet")}
    options = {k: paths.get(v, v) if isinstance(v, str) else v for k, v in options.items()}
    with pytest.raises(ConfigError, match=message):
        SeriesDataModule(**{**SIZES, "store": "mapped", **options}).setup()


def test_auto_maps_only_large_parquet_tables(tmp_path, monkeypatch, caplog):
    path = tmp_path / "data.parquet"
    table().to_parquet(path)
    kw = {**SIZES, "path": str(path), "missing": "mask", "cache_dir": str(tmp_path / "c")}
    small = SeriesDataModule(**kw)
    small.setup()
    assert small.mapped is None
    monkeypatch.setattr("forecast.data.datamodule.AUTO_ROWS", 100)
    with caplog.at_level(logging.INFO, logger="forecast.data.store"):
        large = SeriesDataModule(**kw)
        large.setup()
    assert large.mapped is not None and "mapped store of 11 series" in caplog.text


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=12),
    input_size=st.integers(1, 8),
    horizon=st.integers(1, 5),
    stride=st.integers(1, 4),
    first=st.integers(1, 10),
)
def test_window_index_equals_the_list_of_starts(lengths, input_size, horizon, stride, first):
    n = np.asarray(lengths)
    offsets = np.concatenate([[0], np.cumsum(n)])
    first_target = np.minimum(np.full(len(n), first), n)
    listed = window_starts(offsets, first_target, n, input_size, horizon, stride).astype(np.int64)
    index = WindowIndex(offsets, first_target, n, input_size, horizon, stride)
    assert len(index) == len(listed)
    np.testing.assert_array_equal(index[np.arange(len(listed))], listed)
    if len(listed):
        assert index[-1] == listed[-1]


def test_shards_are_whole_series_balanced_by_windows():
    windows = np.array([100, 1, 1, 1, 50, 50, 0, 97])
    bounds = shard_bounds(windows, 2)
    assert bounds.tolist() == [0, 5, 8]  # 153 | 147: the first cut past half of 300
    assert shard_bounds(np.ones(9, dtype=int), 3).tolist() == [0, 3, 6, 9]
    assert np.all(np.diff(shard_bounds(np.array([0, 0, 0, 5]), 4)) >= 1)  # every rank one series
    with pytest.raises(ConfigError, match="trainer.devices=3 ranks .* 2 series"):
        shard_bounds(np.array([3, 4]), 3)


def test_shard_sampler_draws_the_same_count_on_every_rank():
    small, large = ShardSampler(range(10), 50, True, 1, 0, 2), ShardSampler(range(1000), 50, True, 1, 1, 2)
    a, b = list(small), list(large)
    assert len(a) == len(b) == 50 and max(a) < 10 and max(b) < 1000
    small.set_epoch(1)
    assert list(small) != a  # another epoch, other draws
    assert list(ShardSampler(range(7), 7, False, 1)) == list(range(7))  # evaluation: each once, in order


def test_a_pickled_data_module_maps_the_store_again(tmp_path):
    """trainer=ray sends the set-up data module to its workers: the values travel as the
    store's folder (a few KB), and the copy serves the same batches."""
    import pickle

    path = tmp_path / "data.parquet"
    table(length=2000).to_parquet(path)
    dm = SeriesDataModule(
        path=str(path), store="mapped", cache_dir=str(tmp_path / "c"), missing="mask", **SIZES
    )
    dm.setup()
    data = pickle.dumps(dm)
    assert len(data) < dm.arrays.values.nbytes  # not the values themselves
    copy = pickle.loads(data)
    picks = list(range(0, len(dm.datasets["train"]), 3))
    want, got = dm.datasets["train"].__getitems__(picks), copy.datasets["train"].__getitems__(picks)
    for key in want:
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())
    pd.testing.assert_frame_equal(copy.history("val"), dm.history("val"))
