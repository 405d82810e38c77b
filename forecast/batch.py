"""Batch forecast: registered model + history table in, forecast table out, written atomically.

Two engines run the same per-chunk code (`forecast.engines.chunks`): `local` streams the input
through this process into one Parquet file; `ray` spreads partitions of series over a Ray
cluster and writes a folder of Parquet files. A request is one `BatchRequest`
(`forecast.engines.request`); models are found by `forecast.tracking.resolve`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from forecast.data.io import check_input
from forecast.data.staging import prepare_output
from forecast.engines.local import forecast_file
from forecast.engines.request import BatchRequest
from forecast.tracking.resolve import ModelRef, load_registered
from forecast.tracking.store import use_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchResult:
    """What a batch forecast wrote, from what, and how much."""

    output: Path
    model: ModelRef
    series: int
    rows: int  # input rows forecast from (after the `as_of` cut)
    dropped: int  # input rows after `as_of`
    seconds: float


def run_batch_forecast(
    model_uri: str,
    input_path: str,
    output_path: str,
    root_dir: str = ".",
    batch_size: int = 4096,
    **options: Any,
) -> Path:
    """Forecast every series in `input_path` with the model at `model_uri`, write `output_path`.

    `options`: the other fields of `BatchRequest` (engine, runtime, chunk_rows, progress, ray,
    retry, as_of, future). `local` writes one Parquet file; `ray` a folder of Parquet files.
    Either appears complete or not at all, and an earlier output stays intact when the run
    fails. The output path is checked (and leftovers of killed runs beside it removed) before
    the model is loaded; `retry` says how model loading rides out a tracking server outage;
    `as_of` cuts the history at that date (`forecast.asof`). `future`: for a model with
    future-known covariates, a table of their values over the horizon (id, time, columns),
    instead of future rows in the input (docs/batch.md, Covariates). Scheduled runs go through
    `forecast.schedule`.
    """
    request = BatchRequest(model_uri, input_path, output_path, root_dir, batch_size, **options)
    return forecast_batch(request).output


def forecast_batch(request: BatchRequest) -> BatchResult:
    """`run_batch_forecast` for a whole request, returning what was done."""
    r = request
    assert r.as_of is not None  # BatchRequest fills in the defaults
    use_store(r.root_dir)
    started = time.perf_counter()
    prepare_output(r.output_path, folder=r.engine == "ray")
    extra = {**r.as_of.metadata(), **r.metadata}
    if r.future is not None:
        check_input(r.future)  # a missing future table fails before the model is loaded
        extra["forecast.future"] = os.path.abspath(r.future)
    if r.engine == "ray":
        from forecast.engines.ray import forecast_on_ray

        summary, ref = forecast_on_ray(replace(r, metadata=extra))
        return BatchResult(
            summary.output, ref, summary.series, summary.rows, summary.dropped, time.perf_counter() - started
        )
    forecaster, ref = load_registered(r.model_uri, runtime=r.runtime, retry=r.retry)
    r.as_of.check(forecaster.settings.freq, forecaster.columns.time_col)
    summary = forecast_file(
        forecaster,
        r.input_path,
        r.output_path,
        {**ref.metadata(), **extra},
        chunk_rows=r.chunk_rows,
        batch_size=r.batch_size,
        progress=r.progress,
        as_of=r.as_of,
        future=r.future,
    )
    log.info(
        "forecast %d series x %d steps with %s (version %s, run %s; %s) in %.1fs -> %s",
        summary.series,
        forecaster.settings.horizon,
        ref.name or r.model_uri,
        ref.version or "-",
        ref.run_id,
        forecaster.runtime,
        time.perf_counter() - started,
        summary.output,
    )
    return BatchResult(
        summary.output, ref, summary.series, summary.rows, summary.dropped, time.perf_counter() - started
    )
