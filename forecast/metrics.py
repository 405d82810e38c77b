"""Forecast metrics on the raw scale, accumulated over an epoch (and across DDP ranks)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics import MeanMetric


class RootMeanMetric(MeanMetric):
    """Square root of a weighted mean: RMSE over all steps, not a mean of per-batch RMSEs."""

    def compute(self) -> torch.Tensor:
        return super().compute().sqrt()


def pinball(pred: torch.Tensor, y: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """Quantile loss per element: pred (B, H, Q), y (B, H) -> (B, H, Q)."""
    diff = y[..., None] - pred
    return torch.maximum(quantiles * diff, (quantiles - 1.0) * diff)


def quantile_crps(pred: torch.Tensor, y: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """CRPS approximated from quantiles: 2 x the mean pinball loss over them, (B, H, Q) -> (B, H).

    CRPS = 2 * integral over levels of the pinball loss; a mean over a grid of levels is its
    quadrature, close for a fine even grid, coarse for a quantile model's few levels (3 levels
    score spread and calibration only roughly). Compare CRPS between models of the same levels.
    """
    return 2.0 * pinball(pred, y, quantiles).mean(-1)


def coverage_level(quantiles: Sequence[float]) -> int | None:
    """The nominal level in percent of the outer quantile pair (0.1, 0.9 -> 80); None below two."""
    qs = sorted(quantiles)
    if len(qs) < 2 or qs[-1] <= qs[0]:
        return None
    return round((qs[-1] - qs[0]) * 100)


def make_metrics(sync: bool = True, quantiles: Sequence[float] = ()) -> nn.ModuleDict:
    """One accumulator per metric; names become `<stage>/<name>` in the logs.

    `sync=False` keeps the result local to this process, for scoring done by rank zero alone.
    `quantiles` (a probabilistic model's levels) adds `crps` and `coverage_NN`, the share of
    targets between the outer quantile pair (NN its nominal level: 80 for 0.1 and 0.9).
    """
    kinds = {"mae": MeanMetric, "rmse": RootMeanMetric, "smape": MeanMetric, "mase": MeanMetric}
    if quantiles:
        kinds["crps"] = MeanMetric
        level = coverage_level(quantiles)
        if level is not None:
            kinds[f"coverage_{level}"] = MeanMetric
    return nn.ModuleDict({name: kind(sync_on_compute=sync) for name, kind in kinds.items()})


def update_metrics(
    metrics: nn.ModuleDict,
    y_hat: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    mase_scale: torch.Tensor,
) -> None:
    """Add one batch: y_hat, y, mask (B, H) on the raw scale; mase_scale (B,)."""
    weight = mask.to(y.dtype)
    err = (y_hat - y).abs()  # (B, H)
    denom = y.abs() + y_hat.abs()
    smape = torch.where(denom > 0, 200.0 * err / denom.clamp_min(1e-12), torch.zeros_like(err))
    metrics["mae"].update(err, weight)
    metrics["rmse"].update(err.square(), weight)
    metrics["smape"].update(smape, weight)
    metrics["mase"].update(err / mase_scale[:, None], weight)


def update_probabilistic(
    metrics: nn.ModuleDict, crps: torch.Tensor, inside: torch.Tensor | None, mask: torch.Tensor
) -> None:
    """Add one batch of a probabilistic model: crps (B, H) raw scale, inside (B, H) bool (the
    target lies between the outer quantiles; None: one quantile only), mask (B, H)."""
    weight = mask.to(crps.dtype)
    metrics["crps"].update(crps, weight)
    coverage = [name for name in metrics if name.startswith("coverage_")]
    if inside is not None and coverage:
        metrics[coverage[0]].update(inside.to(crps.dtype), weight)
