"""LightningModule: owns the loss, the metrics and the optimizer; builds its net from values."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from forecast.config import ModelConfig
from forecast.errors import ConfigError, require_int
from forecast.metrics import make_metrics, pinball, quantile_crps, update_metrics, update_probabilistic
from forecast.models.decoders import OWN_OPTIONS
from forecast.models.distributions import DEFAULT_QUANTILES, DISTRIBUTIONS, Distribution
from forecast.models.ensemble import distribution_of
from forecast.models.inputs import CovariateDims
from forecast.models.outputs import median_of_quantiles
from forecast.models.registry import ENSEMBLE, NETS, build_net

# The point and quantile losses, then one per distribution (`distributions.DISTRIBUTIONS`).
LOSSES = ("mae", "mse", "quantile", "smape", *DISTRIBUTIONS)
Loss = str  # a name in LOSSES (a Literal would name every distribution a second time)

__all__ = ["ForecastModule", "Loss", "pinball"]  # pinball: imported from here before it moved


class ForecastModule(L.LightningModule):
    """Trains a forecasting net on scaled windows; reports metrics on the raw scale.

    `loss`: a point loss (mae, mse, smape), the pinball loss of `quantiles` (monotone quantile
    columns), or a distribution's negative log-likelihood (`distributions.DISTRIBUTIONS`: the
    net outputs its parameters; forecasts are its `quantiles`, default 0.1, 0.5, 0.9).
    Probabilistic models also report `crps` and `coverage_NN` on val and test.

    `covariates`: the data's covariate encoder `dims` (`SeriesDataModule.covariates.dims`),
    passed to the net; None for a model of the target alone.
    """

    def __init__(
        self,
        input_size: int | None = None,
        horizon: int | None = None,
        covariates: Mapping[str, Any] | None = None,
        n_series: int = 0,
        **options: Any,
    ) -> None:
        """`options`: `forecast.config.ModelConfig`'s (its defaults are conf/model/lstm.yaml's);
        `covariates` and `n_series` are sized by the data (`forecast.training` passes them)."""
        super().__init__()
        config = ModelConfig.parse({**options, "input_size": input_size, "horizon": horizon})
        self.config = config
        self.save_hyperparameters({**config.to_dict(), "covariates": covariates, "n_series": n_series})
        c = config
        for name in (
            "input_size", "horizon", "hidden_size", "num_layers", "head_hidden", "segment_len",
            "attention_heads", "attention_dim",
        ):  # fmt: skip
            require_int(f"model.{name}", getattr(c, name))
        if not isinstance(c.dropout, int | float) or not 0.0 <= c.dropout < 1.0:
            raise ConfigError(f"model.dropout must be a number in [0, 1), got {c.dropout!r}")
        if not isinstance(c.lr, int | float) or not c.lr > 0:
            raise ConfigError(f"model.lr must be a positive number, got {c.lr!r}")
        if c.loss not in LOSSES:
            raise ConfigError(f"unknown loss {c.loss!r}; use one of {', '.join(LOSSES)}")
        if c.loss == "quantile" and not c.quantiles:
            raise ConfigError("loss=quantile needs model.quantiles (e.g. [0.1, 0.5, 0.9])")
        # A distribution loss: the net outputs its parameters, the loss is its likelihood.
        distribution = DISTRIBUTIONS.get(c.loss)
        is_distribution = distribution is not None
        if c.quantiles and c.loss != "quantile" and not is_distribution:
            raise ConfigError(
                f"model.quantiles needs loss=quantile or a distribution ({', '.join(DISTRIBUTIONS)}), "
                f"got loss={c.loss}: set model.quantiles=null or change the loss"
            )
        quantiles = c.quantiles
        if is_distribution and not quantiles:
            # The forecast columns of a distribution; saved so that the forecaster writes them.
            quantiles = list(DEFAULT_QUANTILES)
            self.hparams["quantiles"] = quantiles
        qs = sorted(quantiles or [])
        if any(not 0.0 < q < 1.0 for q in qs):
            raise ConfigError(f"quantiles must lie strictly between 0 and 1, got {qs}")
        self.net_kind = c.net
        # The net's constructor values: the options its signature takes, and what the data sized.
        taken = inspect.signature(NETS[c.net]).parameters if c.net in NETS else {}
        # Another decoder's own options are left out, as saved before that decoder existed.
        unread = {key for decoder, own in OWN_OPTIONS.items() if decoder != c.decoder for key in own}
        net_params: dict[str, Any] = {k: v for k, v in c.to_dict().items() if k in taken and k not in unread}
        net_params.update(
            n_outputs=distribution.n_params if distribution is not None else max(len(qs), 1),
            n_series=n_series if c.cycle_len and c.cycle_per_series else 0,
            covariates=_plain_dims(covariates),
            # Quantiles are monotone by construction (models saved before that used "point");
            # a distribution's output part is named after it.
            output=c.loss if is_distribution else "quantiles" if qs else "point",
        )
        if c.cycle_len and c.cycle_per_series and n_series < 1:
            raise ConfigError(
                "cycle_per_series needs n_series (the number of training series); "
                "forecast.training passes it from the data"
            )
        self.net_params = net_params
        self.net = build_net(c.net, self.net_params)
        self.register_buffer("quantiles", torch.tensor(qs, dtype=torch.float32), persistent=False)
        self.levels = qs  # a quantile model's point forecast is their median: y_hat, as forecasts write it
        self.distribution: Distribution | None = distribution
        # Keyed "<stage>_" because ModuleDict keys may not shadow nn.Module methods such as train().
        # CRPS and coverage on val and test only: a distribution's quantiles take scipy on the CPU.
        self.metrics = torch.nn.ModuleDict(
            {f"{s}_": make_metrics(quantiles=qs if s != "train" else ()) for s in ("train", "val", "test")}
        )

    def use_ensemble(self, net: torch.nn.Module, net_params: dict[str, Any]) -> None:
        """Score an ensemble of this module's nets (`forecast.models.ensemble`) as this module:
        its net, its saved constructor values, and the combined distribution of a distribution
        head (its net outputs the members' parameters side by side)."""
        self.net, self.net_params, self.net_kind = net, net_params, ENSEMBLE
        self.distribution = distribution_of(net_params)

    def forward(
        self,
        batch: Mapping[str, torch.Tensor] | torch.Tensor,
        x_mask: torch.Tensor | None = None,
        step: torch.Tensor | None = None,
        series: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A batch (`forecast.models.inputs`; or the old positional x, x_mask, step, series) -> (B, H, Q)."""
        return self.net(batch, x_mask, step, series)

    def _loss(
        self, pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        if self.hparams.loss == "smape":
            # Relative error on the raw scale (loc, scale: (B, 1)), as N-BEATS trains for M4: every
            # step of every series weighs the same whatever its level or its spikes.
            f, t = pred[..., 0] * scale + loc, y * scale + loc  # (B, H)
            per_step = 2.0 * (f - t).abs() / (f.abs() + t.abs()).clamp_min(1e-6)
        elif self.hparams.loss == "quantile":
            per_step = pinball(pred, y, self.quantiles).mean(-1)  # (B, H)
        elif self.distribution is not None:
            per_step = self.distribution.nll(pred, y, loc, scale)  # (B, H)
        elif self.hparams.loss == "mse":
            per_step = (pred[..., 0] - y).square()
        else:
            per_step = (pred[..., 0] - y).abs()
        weight = mask.to(per_step.dtype)
        return (per_step * weight).sum() / weight.sum().clamp_min(1.0)

    def _common_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        pred = self(batch)  # (B, H, Q) scaled; a distribution's (B, H, P) parameters
        scale, loc = batch["scale"][:, None], batch["loc"][:, None]  # (B, 1)
        loss = self._loss(pred, batch["y"], batch["y_mask"], loc, scale)
        if self.distribution is not None:
            y_hat = self.distribution.point_raw(pred.detach(), loc, scale)  # (B, H) raw
        else:
            point = median_of_quantiles(pred.detach(), self.levels) if self.levels else pred[..., 0].detach()
            y_hat = point * scale + loc  # (B, H) raw scale
        y = batch["y"] * scale + loc
        metrics = self.metrics[f"{stage}_"]
        update_metrics(metrics, y_hat, y, batch["y_mask"], batch["mase_scale"])
        if "crps" in metrics:
            crps, inside = self._probabilistic(pred.detach(), batch["y"], loc, scale)
            update_probabilistic(metrics, crps, inside, batch["y_mask"])
        batch_size = batch["x"].shape[0]
        on_step = stage == "train"
        self.log(
            f"{stage}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=not on_step,
        )
        if stage != "train":
            for name, metric in metrics.items():
                self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    def on_train_epoch_end(self) -> None:
        """The training metrics, once per epoch. Logging the metric objects every step (as
        validation does) cost 12% of the training time (bench/README.md, B3): Lightning walks
        each logged value's structure on every call. The accumulators sum over the epoch either
        way, so the figures are the same; `compute` syncs them across DDP ranks."""
        metrics = self.metrics["train_"]
        values = {f"train/{name}": metric.compute() for name, metric in metrics.items()}
        self.log_dict(values, sync_dist=True)  # equal on every rank already: no warning under DDP
        for metric in metrics.values():
            metric.reset()

    def _probabilistic(
        self, pred: torch.Tensor, y: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """CRPS (B, H) on the raw scale and whether y (B, H) lies between the outer quantiles.

        A distribution: its CRPS (`Distribution.crps`); a quantile model: the approximation
        from its own quantiles (`forecast.metrics.quantile_crps`).
        """
        if self.distribution is not None:
            crps = self.distribution.crps(pred, y, loc, scale)
            outer = [float(self.quantiles[0]), float(self.quantiles[-1])]
            bounds = self.distribution.quantiles_torch(pred, outer, loc, scale)  # (B, H, 2)
        else:
            crps = quantile_crps(pred, y, self.quantiles) * scale
            bounds = pred[..., [0, -1]]
        if len(self.quantiles) < 2:
            return crps, None
        bounds, y = bounds * scale[..., None] + loc[..., None], y * scale + loc  # raw scale
        if self.distribution is not None and self.distribution.discrete:  # a count on a bound is inside
            bounds, y = bounds.round(), y.round()
        return crps, (bounds[..., 0] <= y) & (y <= bounds[..., 1])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "test")

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        # foreach: one multi-tensor update instead of a Python loop over the parameters (CPU
        # defaults to the loop); the same numbers, bit for bit (tests/models/test_models.py).
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, foreach=True)
        if hp.lr_schedule == "none":
            return optimizer
        steps = int(self.trainer.estimated_stepping_batches)
        if hp.lr_schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
        elif hp.lr_schedule == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=hp.lr, total_steps=max(steps, 1)
            )
        else:
            raise ConfigError(f"unknown lr_schedule {hp.lr_schedule!r}; use none, cosine or onecycle")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _plain_dims(covariates: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The covariate dims as plain JSON values (Hydra passes DictConfig); None without covariates."""
    dims = CovariateDims.parse(covariates)
    if dims.empty:
        return None
    return {key: list(value) if key.endswith("_cat") else value for key, value in vars(dims).items()}
