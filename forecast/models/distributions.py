"""Distribution heads, one object per kind: parameters, likelihood, point, quantiles and CRPS.

`DISTRIBUTIONS` names each kind once; the output part (`forecast.models.outputs`), the loss and
the metrics (`forecast.models.module`) and the forecaster ask it for the object instead of
branching on the name, so a new distribution is one class here (and its tests). A head's
parameters (B, H, P) live on the scaled space the net works in; column 0 is the location, which
the output part shifts and scales like a point forecast; `constrain` maps the other raw columns:

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
from torch import Tensor
from torch import distributions as D
from torch.nn import functional as F

from forecast.errors import ConfigError

# scipy (and the metrics' torchmetrics) are imported where used: serving imports this module
# through the forecaster and should not pay for scipy.stats unless a distribution model runs.

DEFAULT_QUANTILES = (0.1, 0.5, 0.9)  # the forecast columns when a config names none
# Levels of the quantile-grid CRPS (midpoints of 100 equal bins of (0, 1)).
CRPS_GRID = tuple((i + 0.5) / 100 for i in range(100))
SPREAD_EPS = 1e-4  # keeps scales, dispersions and df - 2 away from 0 (finite NLL, finite ppf)
_MIN_MEAN = 1e-6  # keeps log(mean) finite for counts that are all but surely zero


def spread(raw: Tensor, std: Tensor | None) -> Tensor:
    """raw (B, H, 1) -> (B, H, 1) > 0 on the scale of x (times the window std, if any)."""
    positive = F.softplus(raw) + SPREAD_EPS
    return positive if std is None else positive * std[:, :, None]


class Distribution:
    """A distribution head: `n_params` columns, location first. Subclasses define `constrain`,
    `torch_distribution` and `ppf`; the likelihood, the point forecast and the CRPS have
    defaults that hold for a location-scale family on the scaled space."""

    name = ""
    n_params = 2
    discrete = False  # counts: integer quantiles (coverage counts a count on a bound as inside)
    needs_scale = False  # its quantiles need the series' `loc` and `scale` (it lives on the raw scale)

    def constrain(self, raw: Tensor, std: Tensor | None) -> Tensor:
        """raw (B, H, P - 1), the columns after the location -> those parameters (B, H, P - 1);
        `std` (B, 1) is the window norm's, or None: it scales spreads, never shapes."""
        raise NotImplementedError

    def torch_distribution(self, params: Tensor, loc: Tensor, scale: Tensor) -> D.Distribution:
        """The torch distribution of (B, H) cells; loc and scale (B, 1) are the series' scaling."""
        raise NotImplementedError

    def nll(self, params: Tensor, y: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
        """Negative log-likelihood per cell: params (B, H, P), y (B, H) scaled, loc/scale (B, 1) -> (B, H).

        A density on the scaled space (the raw one differs by log(scale), a constant per series).
        """
        return -self.torch_distribution(params, loc, scale).log_prob(y)

    def point_raw(self, params: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
        """The training metrics' point forecast on the raw scale (B, H): the median of a
        symmetric law (= its location)."""
        return params[..., 0] * scale + loc

    def ppf(
        self, params: np.ndarray, levels: np.ndarray, loc: np.ndarray | None, scale: np.ndarray | None
    ) -> np.ndarray:
        """float64 params (N, H, P), levels (1, 1, Q), loc/scale (N,) or None -> (N, H, Q) scaled."""
        raise NotImplementedError

    def quantiles(
        self,
        params: np.ndarray,
        qs: Sequence[float],
        loc: np.ndarray | None = None,
        scale: np.ndarray | None = None,
    ) -> np.ndarray:
        """params (N, H, P) scaled -> (N, H, Q) float32 scaled quantiles at levels `qs`, exactly.

        `loc` and `scale` (N,) are the series' scaling (read where `needs_scale`: negbin).
        """
        p = np.asarray(params, dtype=np.float64)
        levels = np.asarray(qs, dtype=np.float64)[None, None, :]  # (1, 1, Q)
        return self.ppf(p, levels, loc, scale).astype(np.float32)

    def quantiles_torch(self, params: Tensor, qs: Sequence[float], loc: Tensor, scale: Tensor) -> Tensor:
        """`quantiles` for tensors (B, H, P), loc/scale (B, 1) -> (B, H, Q) scaled; no gradient
        (scipy on the CPU: for metrics)."""
        out = self.quantiles(
            params.detach().float().cpu().numpy(),
            qs,
            loc.detach().float().cpu().numpy().reshape(-1),
            scale.detach().float().cpu().numpy().reshape(-1),
        )
        return torch.from_numpy(out).to(params.device)

    def crps(self, params: Tensor, y: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
        """CRPS per cell on the raw scale (B, H), for metrics (no gradient): params (B, H, P),
        y (B, H) scaled, loc/scale (B, 1).

        Without a closed form: twice the mean pinball loss over the quantile grid `CRPS_GRID`
        (the midpoint rule for CRPS = 2 * integral of the pinball loss over the levels).
        """
        from forecast.metrics import quantile_crps

        grid = self.quantiles_torch(params.detach(), CRPS_GRID, loc, scale)  # (B, H, G)
        levels = torch.tensor(CRPS_GRID, dtype=grid.dtype, device=grid.device)
        return quantile_crps(grid, y.detach(), levels) * scale


class Normal(Distribution):
    """Normal(loc, scale): columns loc, scale > 0."""

    name = "normal"

    def constrain(self, raw: Tensor, std: Tensor | None) -> Tensor:
        return spread(raw, std)

    def torch_distribution(self, params: Tensor, loc: Tensor, scale: Tensor) -> D.Distribution:
        return D.Normal(params[..., 0], params[..., 1], validate_args=False)

    def ppf(
        self, params: np.ndarray, levels: np.ndarray, loc: np.ndarray | None, scale: np.ndarray | None
    ) -> np.ndarray:
        from scipy import stats

        return params[..., :1] + params[..., 1:2] * stats.norm.ppf(levels)

    def crps(self, params: Tensor, y: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
        """Closed form (Gneiting et al. 2005), on the raw scale."""
        params, y = params.detach(), y.detach()
        return crps_normal(y, params[..., 0], params[..., 1]) * scale


class StudentT(Distribution):
    """Student-t(df, loc, scale): columns loc, scale > 0, df > 2 (so the variance is finite)."""

    name = "student_t"
    n_params = 3

    def constrain(self, raw: Tensor, std: Tensor | None) -> Tensor:
        df = 2.0 + F.softplus(raw[..., 1:2]) + SPREAD_EPS  # (B, H, 1)
        return torch.cat([spread(raw[..., :1], std), df], dim=-1)

    def torch_distribution(self, params: Tensor, loc: Tensor, scale: Tensor) -> D.Distribution:
        return D.StudentT(params[..., 2], params[..., 0], params[..., 1], validate_args=False)

    def ppf(
        self, params: np.ndarray, levels: np.ndarray, loc: np.ndarray | None, scale: np.ndarray | None
    ) -> np.ndarray:
        from scipy import stats

        return params[..., :1] + params[..., 1:2] * stats.t.ppf(levels, params[..., 2:3])

    def crps(self, params: Tensor, y: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
        """Closed form (Jordan, Krueger and Lerch 2019), on the raw scale."""
        params, y = params.detach(), y.detach()
        cells = [t.float().cpu().numpy() for t in (y, params[..., 0], params[..., 1], params[..., 2])]
        out = torch.from_numpy(crps_student_t(*cells).astype(np.float32)).to(y.device)
        return out * scale


class NegBin(Distribution):
    """Negative binomial for counts: columns a location on the scale of x and a dispersion > 0.

    The counts live on the raw scale, which the net does not see: column 0 maps with the series'
    loc and scale to the mean, mean_raw = softplus(col0 * scale + loc), and the dispersion alpha
    (variance = mean + alpha * mean^2) to total_count = 1 / alpha. The dispersion has no unit:
    the window std leaves it be. Its CRPS is the quantile-grid approximation.
    """

    name = "negbin"
    discrete = True
    needs_scale = True

    def constrain(self, raw: Tensor, std: Tensor | None) -> Tensor:
        return F.softplus(raw) + SPREAD_EPS

    def torch_distribution(self, params: Tensor, loc: Tensor, scale: Tensor) -> D.Distribution:
        """On the raw counts."""
        mean, dispersion = negbin_mean(params, loc, scale), params[..., 1]
        # mean = total_count * exp(logits) with total_count = 1 / dispersion
        return D.NegativeBinomial(1.0 / dispersion, logits=mean.log() + dispersion.log(), validate_args=False)

    def nll(self, params: Tensor, y: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
        """The probability of the raw count: y mapped back and rounded."""
        y = (y * scale + loc).round().clamp_min(0.0)
        return -self.torch_distribution(params, loc, scale).log_prob(y)

    def point_raw(self, params: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
        """Its mean (its median needs the ppf, a CPU round trip per step)."""
        return negbin_mean(params, loc, scale)

    def ppf(
        self, params: np.ndarray, levels: np.ndarray, loc: np.ndarray | None, scale: np.ndarray | None
    ) -> np.ndarray:
        from scipy import stats

        if loc is None or scale is None:
            raise ValueError("negbin quantiles need the series' loc and scale: the counts are raw")
        lo = np.asarray(loc, dtype=np.float64)[:, None, None]
        sc = np.asarray(scale, dtype=np.float64)[:, None, None]  # (N, 1, 1)
        mean = np.maximum(_softplus(params[..., :1] * sc + lo), _MIN_MEAN)  # (N, H, 1) raw
        total = 1.0 / params[..., 1:2]
        counts = stats.nbinom.ppf(levels, total, total / (total + mean))  # (N, H, Q) integers
        return (counts - lo) / sc


DISTRIBUTIONS: dict[str, Distribution] = {d.name: d for d in (Normal(), StudentT(), NegBin())}
KINDS = tuple(DISTRIBUTIONS)  # the names, in the order errors list them


def get(kind: str) -> Distribution:
    """The distribution named `kind`, or a ConfigError that lists the known ones."""
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"unknown distribution {kind!r}; use one of {', '.join(DISTRIBUTIONS)}")
    return DISTRIBUTIONS[kind]


def quantiles(
    kind: str,
    params: np.ndarray,
    qs: Sequence[float],
    loc: np.ndarray | None = None,
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """`Distribution.quantiles` of the distribution named `kind` (the forecaster's entry point)."""
    return get(kind).quantiles(params, qs, loc, scale)


def negbin_mean(params: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """params (B, H, 2), loc and scale (B, 1) -> the raw-scale mean (B, H) > 0."""
    return F.softplus(params[..., 0] * scale + loc).clamp_min(_MIN_MEAN)


def _softplus(x: np.ndarray) -> np.ndarray:
    """torch's softplus (threshold 20) in numpy float64."""
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


def crps_normal(y: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
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
