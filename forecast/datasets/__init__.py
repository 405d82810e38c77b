"""Datasets shipped inside the package, so the demo runs with no download."""

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
}


def dataset_path(name: str) -> Path:
    """Path of an embedded dataset file."""
    if name not in EMBEDDED:
        raise ConfigError(f"unknown embedded dataset {name!r}; available: {sorted(EMBEDDED)}")
    return Path(str(resources.files(__package__) / EMBEDDED[name][0]))


def load_dataset(name: str) -> pd.DataFrame:
    """Load an embedded dataset as a long table (unique_id, ds, y)."""
    return pd.read_parquet(dataset_path(name))
