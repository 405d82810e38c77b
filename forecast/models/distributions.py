"""The distribution heads' parameters -> likelihood, quantiles, point forecast and CRPS.

One place knows each distribution (`KINDS`); the columns come from the output parts of the same
names (`forecast.models.outputs`), on the scaled space the net works in:

- "normal": loc, scale.  "student_t": loc, scale, df (> 2).
- "negbin": a location `m` on the scaled space and a dispersion `alpha`; counts live on the raw
  scale, so the series' `loc` and `scale` map them: mean_raw = softplus(m * scale + loc),
  total_count = 1 / alpha (variance = mean + alpha * mean^2).

Quantiles are exact (scipy's ppf). Normal and Student-t are affine families, so their scaled
parameters give the scaled quantiles directly; negbin's are taken on the raw scale (integers)
and mapped back to the scaled space with (q - loc) / scale, which is what every forecast path
undoes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import distributions as D
from torch.nn import functional as F

from forecast.errors import ConfigError

# scipy (and the metrics' torchmetrics) are imported where used: serving imports this module
# through the forecaster and should not pay for scipy.stats unless a distribution model runs.

KINDS = ("normal", "student_t", "negbin")
N_PARAMS = {"normal": 2, "student_t": 3, "negbin": 2}
DEFAULT_QUANTILES = (0.1, 0.5, 0.9)  # the forecast columns when a config names none
# Levels of the quantile-grid CRPS (midpoints of 100 equal bins of (0, 1)).
CRPS_GRID = tuple((i + 0.5) / 100 for i in range(100))
_MIN_MEAN = 1e-6  # keeps log(mean) finite for counts that are all but surely zero


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ConfigError(f"unknown distribution {kind!r}; use one of {', '.join(KINDS)}")
    return kind


def negbin_mean(params: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """params (B, H, 2), loc and scale (B, 1) -> the raw-scale mean (B, H) > 0."""
    return F.softplus(params[..., 0] * scale + loc).clamp_min(_MIN_MEAN)


def distribution(kind: str, params: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> D.Distribution:
    """The torch distribution of (B, H) cells: on the scaled space, negbin on the raw counts."""
    if check_kind(kind) == "normal":
        return D.Normal(params[..., 0], params[..., 1], validate_args=False)
    if kind == "student_t":
        return D.StudentT(params[..., 2], params[..., 0], params[..., 1], validate_args=False)
    mean, dispersion = negbin_mean(params, loc, scale), params[..., 1]
    # mean = total_count * exp(logits) with total_count = 1 / dispersion
    return D.NegativeBinomial(1.0 / dispersion, logits=mean.log() + dispersion.log(), validate_args=False)


def nll(
    kind: str, params: torch.Tensor, y: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Negative log-likelihood per cell: params (B, H, P), y (B, H) scaled, loc/scale (B, 1) -> (B, H).

    Normal and Student-t: a density on the scaled space (the raw one differs by log(scale), a
    constant per series). Negbin: the probability of the raw count, y mapped back and rounded.
    """
    if kind == "negbin":
        y = (y * scale + loc).round().clamp_min(0.0)
    return -distribution(kind, params, loc, scale).log_prob(y)


def point_raw(kind: str, params: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The training metrics' point forecast on the raw scale (B, H): normal and Student-t their
    median (= loc); negbin its mean (its median needs the ppf, a CPU round trip per step)."""
    if check_kind(kind) == "negbin":
        return negbin_mean(params, loc, scale)
    return params[..., 0] * scale + loc


def _softplus(x: np.ndarray) -> np.ndarray:
    """torch's softplus (threshold 20) in numpy float64."""
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


def quantiles(
    kind: str,
    params: np.ndarray,
    qs: Sequence[float],
    loc: np.ndarray | None = None,
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """params (N, H, P) scaled -> (N, H, Q) float32 scaled quantiles at levels `qs`, exactly.

    `loc` and `scale` (N,) are the series' scaling, needed by negbin only.
    """
    from scipy import stats

    p = np.asarray(params, dtype=np.float64)
    levels = np.asarray(qs, dtype=np.float64)[None, None, :]  # (1, 1, Q)
    if check_kind(kind) == "normal":
        out = p[..., :1] + p[..., 1:2] * stats.norm.ppf(levels)
    elif kind == "student_t":
        out = p[..., :1] + p[..., 1:2] * stats.t.ppf(levels, p[..., 2:3])
    else:
        if loc is None or scale is None:
            raise ValueError("negbin quantiles need the series' loc and scale: the counts are raw")
        lo = np.asarray(loc, dtype=np.float64)[:, None, None]
        sc = np.asarray(scale, dtype=np.float64)[:, None, None]  # (N, 1, 1)
        mean = np.maximum(_softplus(p[..., :1] * sc + lo), _MIN_MEAN)  # (N, H, 1) raw
        total = 1.0 / p[..., 1:2]
        counts = stats.nbinom.ppf(levels, total, total / (total + mean))  # (N, H, Q) integers
        out = (counts - lo) / sc
    return out.astype(np.float32)


def quantiles_torch(
    kind: str, params: torch.Tensor, qs: Sequence[float], loc: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """`quantiles` for tensors (B, H, P), loc/scale (B, 1) -> (B, H, Q) scaled; no gradient
    (scipy on the CPU: for metrics)."""
    out = quantiles(
        kind,
        params.detach().float().cpu().numpy(),
        qs,
        loc.detach().float().cpu().numpy().reshape(-1),
        scale.detach().float().cpu().numpy().reshape(-1),
    )
    return torch.from_numpy(out).to(params.device)


def crps_normal(y: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Closed-form CRPS of Normal(mu, sigma) at y (Gneiting et al. 2005), elementwise."""
    z = (y - mu) / sigma
    std = D.Normal(torch.zeros_like(z), torch.ones_like(z))
    return sigma * (z * (2.0 * std.cdf(z) - 1.0) + 2.0 * std.log_prob(z).exp() - 1.0 / math.sqrt(math.pi))


def crps_student_t(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Closed-form CRPS of a Student-t with df > 1 (Jordan, Krueger and Lerch 2019), elementwise."""
    from scipy import special, stats

    z = (y - mu) / sigma
    tail = 2.0 * stats.t.pdf(z, df) * (df + z**2) / (df - 1.0)
    const = 2.0 * np.sqrt(df) * special.beta(0.5, df - 0.5) / ((df - 1.0) * special.beta(0.5, df / 2.0) ** 2)
    return sigma * (z * (2.0 * stats.t.cdf(z, df) - 1.0) + tail - const)


def crps(
    kind: str, params: torch.Tensor, y: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """CRPS per cell on the raw scale (B, H), for metrics (no gradient): params (B, H, P),
    y (B, H) scaled, loc/scale (B, 1).

    Normal and Student-t: closed forms. Negbin: an approximation, twice the mean pinball loss
    over the quantile grid `CRPS_GRID` (the midpoint rule for CRPS = 2 * integral of the
    pinball loss over the levels).
    """
    from forecast.metrics import quantile_crps

    params, y = params.detach(), y.detach()
    if check_kind(kind) == "normal":
        return crps_normal(y, params[..., 0], params[..., 1]) * scale
    if kind == "student_t":
        cells = [t.float().cpu().numpy() for t in (y, params[..., 0], params[..., 1], params[..., 2])]
        out = torch.from_numpy(crps_student_t(*cells).astype(np.float32)).to(y.device)
        return out * scale
    grid = quantiles_torch(kind, params, CRPS_GRID, loc, scale)  # (B, H, G)
    levels = torch.tensor(CRPS_GRID, dtype=grid.dtype, device=grid.device)
    return quantile_crps(grid, y, levels) * scale
