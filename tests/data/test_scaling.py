import numpy as np
import pandas as pd
import pytest

from forecast.data.scaling import SeriesScaler


@pytest.mark.parametrize("kind", ["standard", "robust", "minmax", "none"])
def test_transform_inverts(kind):
    rng = np.random.default_rng(0)
    ids = pd.Series(np.repeat(["a", "b"], 50))
    values = pd.Series(np.r_[rng.normal(10, 2, 50), rng.normal(-5, 0.1, 50)])
    scaler = SeriesScaler.fit(ids, values, kind)
    loc, scale, known = scaler.lookup(ids.to_numpy())
    scaled = (values.to_numpy() - loc) / scale
    assert known.all()
    np.testing.assert_allclose(scaled * scale + loc, values, rtol=1e-5)
    if kind == "standard":
        for uid in ("a", "b"):
            part = scaled[ids == uid]
            assert abs(part.mean()) < 1e-4 and abs(part.std() - 1) < 1e-3


def test_constant_series_and_unknown_ids():
    scaler = SeriesScaler.fit(pd.Series(["c"] * 5), pd.Series([3.0] * 5))
    loc, scale, known = scaler.lookup(np.array(["c", "new"]))
    assert loc.tolist() == [3.0, 0.0] and scale.tolist() == [1.0, 1.0]
    assert known.tolist() == [True, False]


def test_round_trip_through_a_table():
    scaler = SeriesScaler.fit(pd.Series([1, 1, 2, 2]), pd.Series([0.0, 2.0, 5.0, 7.0]))
    again = SeriesScaler.from_frame(scaler.to_frame(), "standard")
    pd.testing.assert_frame_equal(again.stats, scaler.stats)


@pytest.mark.parametrize("kind", ["standard", "robust", "minmax", "none"])
def test_segment_stats_equal_the_groupby_fit(kind):
    """The data module fits its scaler by segment sums; it must give SeriesScaler.fit's numbers."""
    from forecast.data.scaling import segment_stats

    rng = np.random.default_rng(0)
    values = (rng.standard_normal(1000) * 50 + 3).astype(np.float32)
    values[rng.random(1000) < 0.05] = np.nan
    values[300:320] = 7.0  # a constant stretch: scale 1
    starts, ends = np.array([0, 100, 300, 500, 900]), np.array([80, 250, 320, 900, 1000])
    codes = np.concatenate([np.full(e - s, i) for i, (s, e) in enumerate(zip(starts, ends, strict=True))])
    rows = np.concatenate([values[s:e] for s, e in zip(starts, ends, strict=True)])
    loc_ref, scale_ref, _ = SeriesScaler.fit(pd.Series(codes), pd.Series(rows), kind).lookup(np.arange(5))
    for order in (slice(None), slice(None, None, -1)):  # in order, and out of order (gathered)
        loc, scale = segment_stats(values, starts[order].copy(), ends[order].copy(), kind)
        np.testing.assert_array_equal(loc, loc_ref[order])
        np.testing.assert_array_equal(scale, scale_ref[order])
