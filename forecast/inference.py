"""Running the network over scaled windows in memory-bounded batches: (N, L) scaled inputs ->
(N, H, 1 + Q) scaled forecast columns, `y_hat` first, whatever the head and the runtime."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from torch import nn

from forecast.models.ensemble import distribution_of
from forecast.models.outputs import median_of_quantiles
from forecast.runtimes import NetRunner
from forecast.settings import ForecasterSettings


def max_batch(net: nn.Module, input_size: int) -> int:
    """Series per forward pass that keep the recurrent gate buffers near 256 MB.

    Both runtimes hold (batch, recurrent steps, 4 x hidden) float32 gates per layer: at 168
    steps (segment_len=1) a batch of 4096 held about 1.4 GB each, pushing the 100k-series
    forecast to 3.9 GB peak; smaller batches measured no slower there.
    """
    steps = getattr(net, "n_segments", input_size)
    hidden = getattr(net, "hidden_size", 128)
    return max(256, 2**24 // max(steps * hidden, 1))


def predict_scaled(
    scaled: np.ndarray,
    batch_size: int = 4096,
    step: np.ndarray | None = None,
    series: np.ndarray | None = None,
    covariates: Mapping[str, np.ndarray] | None = None,
    loc: np.ndarray | None = None,
    scale: np.ndarray | None = None,
    *,
    run: NetRunner,
    settings: ForecasterSettings,
    keys: Sequence[str],
    reads_covariates: bool,
    batch_cap: int,
) -> np.ndarray:
    """(N, L) scaled windows, NaN where missing -> (N, H, 1 + Q) scaled forecasts.

    `run` runs the net (`forecast.runtimes`) on the batch keys `keys` (covariates among them
    when `reads_covariates`), at most `batch_cap` windows at a time (`max_batch`).

    Every model returns its forecast columns (`ForecasterSettings.output_columns`): the point
    forecast first (`y_hat`), then its Q quantiles, whatever runs the net (PyTorch or ONNX). A
    distribution model's net outputs parameters, turned here into its exact median and quantiles
    (`Distribution.quantiles`; an ensemble's into its members' combined: `CombinedDistribution`);
    a quantile head's point forecast is its median (`median_of_quantiles`). A distribution that
    `needs_scale` (negbin: its counts live on the raw scale) also needs `loc` and `scale` (N,),
    the windows' scaling (`ScaledWindows`).

    A model with a learned cycle also needs `step`, each window's absolute step number of
    its first forecast step (`forecast.data.calendar.step_index`), and may take `series`,
    the series codes (`SeriesScaler.codes`; 0 or None: the shared cycle only). A model with
    covariates needs `covariates`: the encoded batch arrays of the windows ("futr"
    (N, L + H, F), "hist" (N, L, P), "static" (N, S), ...; `CovariateRows.windows`).
    """
    observed = ~np.isnan(scaled)
    x = np.where(observed, scaled, np.float32(0.0)).astype(np.float32, copy=False)
    batch: dict[str, np.ndarray] = {"x": x, "x_mask": observed}
    if settings.net_params.get("cycle_len"):
        if step is None:
            raise ValueError("this model learns a cycle: predict_scaled needs `step` for every window")
        batch["step"] = np.asarray(step, dtype=np.int64)
        batch["series"] = np.zeros(len(x), np.int64) if series is None else np.asarray(series, dtype=np.int64)
    if reads_covariates:
        absent = [k for k in keys if k not in batch and k not in (covariates or {})]
        if absent:
            raise ValueError(f"this model reads covariates: predict_scaled needs {absent} for every window")
        batch.update(covariates)
    head, levels = distribution_of(settings.net_params), settings.quantiles
    if head is not None and head.needs_scale and (loc is None or scale is None):
        raise ValueError("this model forecasts counts (negbin): predict_scaled needs `loc` and `scale`")
    batch_size = min(batch_size, batch_cap)
    outputs = []
    for i in range(0, len(x), batch_size):
        out = run({k: v[i : i + batch_size] for k, v in batch.items()})  # (b, H, Q | P)
        if head is not None:
            part = slice(i, i + batch_size)
            out = head.quantiles(
                out,
                [0.5, *levels],  # the exact median, whether or not 0.5 is among the levels
                None if loc is None else np.asarray(loc)[part],
                None if scale is None else np.asarray(scale)[part],
            )  # (b, H, 1 + Q)
        elif levels:
            out = np.concatenate([median_of_quantiles(out, levels)[..., None], out], axis=-1)
        outputs.append(out)  # (b, H, 1 + Q): y_hat, then the quantiles
    if not outputs:
        return np.zeros((0, settings.horizon, len(settings.output_columns)), np.float32)
    return np.concatenate(outputs)
