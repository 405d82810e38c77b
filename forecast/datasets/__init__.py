"""Datasets shipped inside the package, so the demo runs with no download.

- `m4_hourly_sample`: M4 Hourly series (Makridakis, Spiliotis, Assimakopoulos, 2020, the M4
  competition's public data; free for research use, cite the M4 paper).
- `epf_np_sample`: the last 364 days (2017-12-26 to 2018-12-24, 8,736 hours) of the Nord Pool
  day-ahead market of the open EPF benchmark data: Lago, Marcjasz, De Schutter, Weron (2021),
  "Forecasting day-ahead electricity prices: A review of state-of-the-art algorithms, best
  practices and an open-access benchmark", Applied Energy 293, 116983 (the `epftoolbox` data
  sets; open research data, cite the paper). Columns: unique_id ("NP"), ds, y (the system
  price, EUR/MWh), load_forecast and wind_forecast (the day-ahead grid load and wind power
  forecasts, MW), published before the auction, hence known for the whole target day: the
  future-known covariates of `conf/data/epf_np_sample.yaml`. Written by
  `bench/epf.py --write-sample` from the benchmark's copy of the file (B4 of BENCHMARKS.md).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from forecast.errors import ConfigError

# name -> (file, description). Sources and licences are in the README.
EMBEDDED = {
    "m4_hourly_sample": (
        "m4_hourly_sample.parquet",
        (
            "69 M4 Hourly series (every 6th of 414), last 672 hourly values of train + test; "
            "nominal timestamps from 2017-01-01 (M4 publishes none for these series)."
        ),
    ),
    "epf_np_sample": (
        "epf_np_sample.parquet",
        (
            "Nord Pool day-ahead prices, hourly, 2017-12-26 to 2018-12-24 (364 days), with the "
            "day-ahead load and wind power forecasts (future-known covariates); Lago et al. 2021, "
            "the epftoolbox data."
        ),
    ),
}


def dataset_path(name: str) -> Path:
    """Path of an embedded dataset file."""
    if name not in EMBEDDED:
        raise ConfigError(f"unknown embedded dataset {name!r}; available: {sorted(EMBEDDED)}")
    return Path(str(resources.files(__package__) / EMBEDDED[name][0]))


def load_dataset(name: str) -> pd.DataFrame:
    """Load an embedded dataset as a long table (unique_id, ds, y, and its covariates if any)."""
    return pd.read_parquet(dataset_path(name))
