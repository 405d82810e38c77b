"""K trained nets as one net: every runtime that runs a net forecasts their combination.

The members' outputs (point forecasts or monotone quantile columns, on the scaled values) are
combined element-wise: the mean over members (the default) or the median (robust to one bad
seed). The mean was chosen on validation: B1 (M4 Hourly), five seeds, validation OWA 0.457 for the
mean against 0.461 for the median (bench/README.md, "Ensembles").
Both keep quantile columns monotone: each is an order statistic or an average of columns that
are each sorted. The ensemble is an `nn.Module` with one forward, so the Forecaster, the pyfunc,
the ONNX copy, the engines and the backtest need nothing of their own for it.

Distribution heads (normal, Student-t, negbin) output parameters, and the mean of parameters is
not a forecast of anything: the ensemble net returns its members' parameters side by side
(B, H, K x P), and `CombinedDistribution` turns them into the forecast where a single model's
parameters become its quantiles (`forecast.inference`, the metrics): each member's exact
quantiles, combined level by level with the same rule (the mean of the quantile functions is
Vincentization; quantile heads are combined the same way), so `y_hat` is the combination of the
members' medians.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from forecast.errors import ConfigError
from forecast.models import distributions
from forecast.models.distributions import Distribution
from forecast.models.inputs import as_batch, input_keys

COMBINE = ("mean", "median")
DEFAULT_COMBINE = "mean"  # chosen on validation (module docstring); conf/train.yaml says the same
# What every member must share: the batch it reads and the columns it writes.
SHARED = ("input_size", "horizon", "output", "n_outputs")


def combine_outputs(stacked: torch.Tensor, combine: str) -> torch.Tensor:
    """(K, B, H, Q) member outputs -> (B, H, Q). The median is the lower middle value for an even
    K written as sort + index, which every ONNX opset exports (torch.median's dim form is not
    exported by the TorchScript exporter); for K = 2 it averages the two."""
    if combine == "mean" or stacked.shape[0] == 2:
        return stacked.mean(dim=0)
    k = stacked.shape[0]
    ordered = torch.sort(stacked, dim=0).values
    if k % 2:
        return ordered[k // 2]
    return 0.5 * (ordered[k // 2 - 1] + ordered[k // 2])


def check_members(members: Sequence[Mapping[str, Any]], combine: str) -> None:
    """One-line errors for members that cannot be one net: an unknown rule, or members that read
    or write different things."""
    if combine not in COMBINE:
        raise ConfigError(f"ensemble.combine must be one of {', '.join(COMBINE)}, got {combine!r}")
    if not members:
        raise ConfigError("an ensemble needs at least one member")
    first = members[0]
    for i, params in enumerate(members[1:], start=1):
        differs = [
            f"{k} {params.get(k)!r} != {first.get(k)!r}" for k in SHARED if params.get(k) != first.get(k)
        ]
        if input_keys(params) != input_keys(first):
            differs.append(f"inputs {input_keys(params)} != {input_keys(first)}")
        if differs:
            raise ConfigError(f"ensemble member {i} does not match member 0: {'; '.join(differs)}")


def ensemble_params(
    members: Sequence[Mapping[str, Any]], member_net: str = "recurrent", combine: str = "median"
) -> dict[str, Any]:
    """The ensemble's saved constructor values: the members' own, and beside them the keys the
    runtimes read of any net (sizes, inputs, output kind), taken from member 0."""
    check_members(members, combine)
    shared = {k: v for k, v in members[0].items() if k in (*SHARED, "cycle_len", "n_series", "covariates")}
    return {**shared, "members": [dict(m) for m in members], "member_net": member_net, "combine": combine}


class EnsembleNet(nn.Module):
    """The combination (`combine_outputs`) of member nets that read the same batch."""

    def __init__(
        self,
        members: Sequence[Mapping[str, Any]],
        member_net: str = "recurrent",
        combine: str = "median",
        nets: Sequence[nn.Module] | None = None,
        **shared: Any,
    ) -> None:
        """`members`: each member's constructor values; `nets`: the member nets, built from them
        (`forecast.models.registry.build_net` does that for a saved ensemble); `shared`: the
        runtimes' copy of member 0's sizes."""
        super().__init__()
        check_members(members, combine)
        if nets is None or len(nets) != len(members):
            raise ConfigError(f"an ensemble of {len(members)} members needs as many nets")
        self.combine = combine
        self.members = nn.ModuleList(nets)
        # Distribution parameters are not combined here (module docstring): laid side by side.
        self.side_by_side = members[0].get("output") in distributions.KINDS

    def forward(
        self,
        batch: Mapping[str, torch.Tensor] | torch.Tensor,
        x_mask: torch.Tensor | None = None,
        step: torch.Tensor | None = None,
        series: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A batch -> (B, H, n_outputs): the members' outputs combined; a distribution head's
        parameters -> (B, H, K x n_outputs), member after member (`CombinedDistribution`)."""
        batch = as_batch(batch, x_mask, step, series)
        outputs = [m(batch) for m in self.members]
        if self.side_by_side:
            return torch.cat(outputs, dim=-1)
        return combine_outputs(torch.stack(outputs), self.combine)

    @property
    def n_segments(self) -> int:
        """Recurrent steps per window (`forecast.inference.max_batch` sizes batches by them)."""
        return max(getattr(m, "n_segments", 1) for m in self.members)

    @property
    def hidden_size(self) -> int:
        """K members hold K times one member's gate buffers at once: sized as one wider net."""
        return sum(getattr(m, "hidden_size", 128) for m in self.members)

    @property
    def has_attention(self) -> bool:
        return False  # attention plots show one net's weights; an ensemble has K of them


class CombinedDistribution(Distribution):
    """The forecast of K members of one distribution head, from their parameters side by side
    (B, H, K x P): quantiles level by level (`combine_outputs` of each member's exact quantiles),
    the training metrics' point forecast as the combination of the members' own.

    The combined law has no closed density; its likelihood (`nll`, the ensemble's `val/loss`) is
    that of the members' equal mixture, the usual score of a deep ensemble."""

    def __init__(self, member: Distribution, k: int, combine: str) -> None:
        self.member, self.k, self.combine = member, k, combine
        self.name = member.name
        self.n_params = k * member.n_params
        self.discrete = member.discrete  # combined counts are rounded where a member's are
        self.needs_scale = member.needs_scale

    def _split(self, params: Any) -> list[Any]:
        """(..., K x P) -> K arrays or tensors (..., P), member after member."""
        p = self.member.n_params
        return [params[..., i * p : (i + 1) * p] for i in range(self.k)]

    def nll(
        self, params: torch.Tensor, y: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        log_probs = torch.stack([-self.member.nll(p, y, loc, scale) for p in self._split(params)])
        return -(torch.logsumexp(log_probs, dim=0) - math.log(self.k))

    def point_raw(self, params: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        points = torch.stack([self.member.point_raw(p, loc, scale) for p in self._split(params)])
        return combine_outputs(points, self.combine)

    def ppf(
        self, params: np.ndarray, levels: np.ndarray, loc: np.ndarray | None, scale: np.ndarray | None
    ) -> np.ndarray:
        each = np.stack([self.member.ppf(p, levels, loc, scale) for p in self._split(params)])
        return combine_outputs(torch.from_numpy(each), self.combine).numpy()


def distribution_of(net_params: Mapping[str, Any]) -> Distribution | None:
    """The distribution whose parameters a net (an ensemble or one model) outputs, or None: the
    net outputs forecast columns themselves."""
    kind = net_params.get("output")
    if kind not in distributions.KINDS:
        return None
    member = distributions.get(kind)
    if "members" not in net_params:
        return member
    combine = net_params.get("combine", DEFAULT_COMBINE)
    return CombinedDistribution(member, len(net_params["members"]), combine)
