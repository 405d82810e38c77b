"""The mapped store's Arrow fast path (forecast.data.chunk_checks) accepts only what the in-memory
path's validation accepts unchanged, and gives the same arrays; clean tables do take it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecast.data.chunk_checks import Chunk, clean_chunk
from forecast.data.store import StoreOptions, _validated
from forecast.data.validation import ColumnSpec
from forecast.errors import DataValidationError

COLUMNS = ColumnSpec()

FAULTS = [
    None,
    "swap",  # two rows of a series out of time order (valid: pandas sorts)
    "gap",  # a missing step
    "duplicate",  # a row twice
    "nan",  # a missing target
    "inf",  # an infinite target
    "huge",  # beyond float32
    "ids_unsorted",  # series out of id order (valid: pandas sorts)
    "null_id",
    "off_step",  # a step of 2 where the frequency says 1
    "text_target",
    "int_target",
    "int32_time",
]


def _frame(lengths: list[int], integer_ids: bool, integer_time: bool, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = np.repeat(
        np.arange(len(lengths)) * 7 + 3 if integer_ids else [f"s{i:03d}" for i in range(len(lengths))],
        lengths,
    )
    steps = np.concatenate([np.arange(n) + rng.integers(0, 5) for n in lengths])
    ds = steps * 2 if integer_time else pd.Timestamp("2024-01-01") + pd.to_timedelta(steps, unit="h")
    return pd.DataFrame({"unique_id": ids, "ds": ds, "y": rng.normal(size=len(ids))})


def _fault(frame: pd.DataFrame, fault: str | None, rng: np.random.Generator) -> pd.DataFrame:
    frame = frame.copy()
    i = int(rng.integers(0, max(len(frame) - 1, 1)))
    if fault == "swap":
        frame.iloc[[i, i + 1]] = frame.iloc[[i + 1, i]].to_numpy()
    elif fault == "gap":
        frame = frame.drop(index=i).reset_index(drop=True)
    elif fault == "duplicate":
        frame = pd.concat([frame.iloc[: i + 1], frame.iloc[i:]], ignore_index=True)
    elif fault in ("nan", "inf", "huge"):
        frame.loc[i, "y"] = {"nan": np.nan, "inf": np.inf, "huge": 1e39}[fault]
    elif fault == "ids_unsorted":
        frame = frame.iloc[::-1].reset_index(drop=True)
    elif fault == "null_id":
        frame["unique_id"] = frame["unique_id"].astype(object)
        frame.loc[i, "unique_id"] = None
    elif fault == "off_step":
        frame.loc[i:, "ds"] = frame.loc[i:, "ds"] + (frame["ds"].iloc[1] - frame["ds"].iloc[0])
    elif fault == "text_target":
        frame["y"] = frame["y"].round(2).astype(str)
    elif fault == "int_target":
        frame["y"] = (frame["y"] * 1000).round().astype("int64")
    elif fault == "int32_time" and frame["ds"].dtype.kind == "i":
        frame["ds"] = frame["ds"].astype("int32")
    return frame


def _options(missing: str, freq) -> StoreOptions:
    return StoreOptions(COLUMNS, freq, missing, "error", 6, 6, 6, "standard", None)


def assert_same_chunk(fast: Chunk, slow: Chunk) -> None:
    assert list(fast.ids) == list(slow.ids) and fast.freq == slow.freq
    np.testing.assert_array_equal(fast.lengths, slow.lengths)
    np.testing.assert_array_equal(fast.first, slow.first)
    assert fast.first.dtype == slow.first.dtype and fast.values.dtype == slow.values.dtype == np.float32
    np.testing.assert_array_equal(fast.values, slow.values)  # NaN where NaN


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=5).filter(lambda n: sum(n) >= 2),
    integer_ids=st.booleans(),
    integer_time=st.booleans(),
    fault=st.sampled_from(FAULTS),
    missing=st.sampled_from(["error", "mask"]),
    given_freq=st.booleans(),
    dictionary_ids=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_fast_path_accepts_only_what_validation_accepts_as_it_is(
    lengths, integer_ids, integer_time, fault, missing, given_freq, dictionary_ids, seed
):
    frame = _fault(_frame(lengths, integer_ids, integer_time, seed), fault, np.random.default_rng(seed))
    freq = (2 if integer_time else "h") if given_freq else None
    table = pa.Table.from_pandas(frame, preserve_index=False)
    dictionary = []
    if dictionary_ids and pa.types.is_string(
        table.schema.field("unique_id").type
    ):  # as the store reads text ids
        table = table.set_column(0, "unique_id", table.column("unique_id").dictionary_encode())
        dictionary = ["unique_id"]
    fast = clean_chunk(table, COLUMNS, freq, missing, None)
    try:
        slow = _validated(table, _options(missing, freq), freq, None, 0, dictionary)
    except DataValidationError:
        assert fast is None, "the fast path accepted a table validation refuses"
        return
    if fast is not None:
        assert_same_chunk(fast, slow)
    elif fault in (None, "int_target", "int32_time") or (fault == "nan" and missing == "mask"):
        pytest.fail("a table validation accepts as it is did not take the fast path")


@pytest.mark.parametrize("integer_time", [False, True])
def test_clean_tables_take_the_fast_path(integer_time):
    frame = _frame([40, 3, 25], integer_ids=False, integer_time=integer_time, seed=1)
    frame.loc[7, "y"] = np.nan
    table = pa.Table.from_pandas(frame, preserve_index=False)
    freq = 2 if integer_time else None  # integer steps of 2 need data.freq; hours are inferred
    fast = clean_chunk(table, COLUMNS, freq, "mask", None)
    assert fast is not None
    assert_same_chunk(fast, _validated(table, _options("mask", freq), freq, None, 0, []))
    assert clean_chunk(table, COLUMNS, freq, "error", None) is None  # pandas names the missing value
