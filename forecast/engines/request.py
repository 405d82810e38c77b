"""One batch forecast, as a value: what to forecast with, from what, to where, and how.

Built once where the options come in (`BatchRequest.from_config` for the Hydra app, keywords for
`forecast.batch.run_batch_forecast`), then handed whole through the scheduler, the batch job
and the engines, instead of a dozen options passed by hand through each layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from forecast.asof import AsOf
from forecast.errors import ConfigError
from forecast.tracking.resolve import LoadRetry

if TYPE_CHECKING:
    from forecast.engines.progress import ProgressMode
    from forecast.forecaster import Runtime

Engine = Literal["local", "ray"]


@dataclass
class RayOptions:
    """Where and how wide the Ray engine runs (see conf/batch_forecast.yaml)."""

    address: str | None = None  # None: start a local Ray; "auto": join the running cluster
    num_cpus: int | None = None  # for a local Ray only
    workers: int | None = None  # model replicas; default: one per CPU of the cluster
    cpus_per_worker: float = 1.0
    rows_per_partition: int = 1_000_000
    init_kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BatchRequest:
    """A batch forecast (conf/batch_forecast.yaml, docs/batch.md).

    `output_path` may hold `{as_of}` (the scheduler fills it in); `as_of` cuts the history
    (`forecast.asof`); `future`: the future-known covariates over the horizon, for models that
    read them; `metadata`: added to the output file's own.
    """

    model_uri: str
    input_path: str
    output_path: str
    root_dir: str = "."
    batch_size: int = 4096
    engine: Engine = "local"
    runtime: Runtime = "auto"
    chunk_rows: int = 1_000_000
    progress: ProgressMode = "auto"
    ray: RayOptions | None = None
    retry: LoadRetry | None = None
    as_of: AsOf | None = None
    future: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"unknown engine {self.engine!r}; use local or ray")
        # None: the defaults (callers of the keyword API pass None for "not given")
        object.__setattr__(self, "ray", self.ray or RayOptions())
        object.__setattr__(self, "retry", self.retry or LoadRetry())
        object.__setattr__(self, "as_of", self.as_of or AsOf(None))

    @classmethod
    def from_config(cls, cfg: Any) -> BatchRequest:
        """The request conf/batch_forecast.yaml describes (the one place its keys are read)."""
        from omegaconf import OmegaConf

        ray = OmegaConf.to_container(cfg.ray, resolve=True) if cfg.get("ray") is not None else {}
        return cls(
            model_uri=cfg.model_uri,
            input_path=cfg.input,
            output_path=cfg.output,
            root_dir=cfg.paths.root_dir,
            batch_size=cfg.batch_size,
            engine=cfg.engine,
            runtime=cfg.runtime,
            chunk_rows=cfg.chunk_rows,
            progress=cfg.progress,
            ray=RayOptions(**ray),  # type: ignore[arg-type]
            retry=LoadRetry(
                retries=cfg.load_retries, backoff_s=cfg.load_backoff_s, timeout_s=cfg.load_timeout_s
            ),
            as_of=AsOf.parse(cfg.as_of, strict=cfg.get("as_of_strict", False)),
            # future=PATH: the future-known covariates over the horizon, for models that read them
            future=cfg.get("future"),
        )
