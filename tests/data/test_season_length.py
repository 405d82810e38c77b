"""season_length follows the frequency when not set, so the seasonal-naive baseline of hourly or
daily data is seasonal (with 1 it was the plain last value)."""

import pytest

from forecast.data import SeriesDataModule, synthetic_long
from forecast.data.calendar import season_length_for


@pytest.mark.parametrize(
    ("freq", "season"),
    [("h", 24), ("2h", 12), ("15min", 96), ("min", 1440), ("D", 7), ("B", 5), ("W-SUN", 52), ("MS", 12),
     ("ME", 12), ("QS-JAN", 4), ("QE", 4), ("YS", 1), ("2D", 1), ("s", 1), ("5h", 1), (3, 1), (None, 1)],
)  # fmt: skip
def test_season_length_for_frequency(freq, season):
    assert season_length_for(freq) == season


@pytest.mark.parametrize(("freq", "season"), [("h", 24), ("D", 7)])
def test_data_module_takes_the_frequency_s_season_when_unset(freq, season):
    frame = synthetic_long(n_series=2, length=120, seed=0, freq=freq)
    dm = SeriesDataModule(frame=frame, input_size=24, horizon=6)
    dm.setup()
    assert dm.data_freq == freq and dm.season_length == season
    explicit = SeriesDataModule(frame=frame, input_size=24, horizon=6, season_length=1)
    explicit.setup()
    assert explicit.season_length == 1
