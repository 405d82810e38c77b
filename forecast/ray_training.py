"""Training on a Ray cluster (`trainer=ray`): the Lightning fit runs in Ray Train workers.

This process builds the data, the model, the callbacks and the MLflow run exactly as for one
process (`forecast.training.fit`). `fit_on_ray` sends them to `ray.num_workers` Ray Train
workers (`TorchTrainer`; Lightning's DDP through Ray's strategy and environment, one rank per
worker), which fit and test as one process does (`forecast.fitting.fit_and_test`); rank 0 logs
to the job's MLflow run, the other ranks log nothing. Checkpoints go where the job's
ModelCheckpoint says (the run folder): every worker writes or reads them there (`trainer.test`
loads the best on every rank), so on a cluster of several machines the run folder must be on a
file system all of them mount; a worker that cannot see it fails the job at once, saying so.
At the end this process takes over rank 0's end state (epochs, steps, the checkpoint and
early-stopping callbacks' state, metrics held back during a tracking outage) and the best
weights, and the job packages, publishes and registers the model as after one process.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from forecast.checkpoints import load_checkpoint
from forecast.config import Options, option
from forecast.console import quiet
from forecast.errors import ConfigError, ForecastError, require_int
from forecast.fitting import FitOutcome, checkpoint_callback, fit_and_test
from forecast.tracking.http import apply_process_defaults, is_remote
from forecast.tracking.outage import HeldBack, ResilientMLFlowLogger

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

# Lightning arguments that Ray decides: one device per worker, Ray's DDP strategy and environment.
_RAY_DECIDES = ("accelerator", "devices", "num_nodes", "strategy", "plugins")
INSTALL_HINT = "pip install 'forecast[ray]' (or train with another trainer: trainer=cpu, ddp_cpu, ...)"


@dataclass
class RayTrainOptions(Options):
    """Where and how wide `trainer=ray` trains (`conf/trainer/ray.yaml`, `trainer.ray.*`)."""

    group: ClassVar[str] = "trainer.ray"
    address: str | None = option(
        None,
        "`null`: start a local Ray for the run; `auto`: join the running cluster (`ray start --head`, "
        "or RAY_ADDRESS); or the head's `host:port`",
    )
    num_workers: int = option(2, "training processes (DDP ranks), one device each")
    cpus_per_worker: float = option(1.0, "CPUs reserved per worker")
    use_gpu: bool = option(False, "one GPU per worker (NCCL); else CPU workers (gloo)")
    storage_path: str | None = option(
        None, "Ray Train's own run folder (its state and logs); `null`: `ray/` in the run folder"
    )
    init_kwargs: dict[str, Any] = option({}, "extra keyword arguments for `ray.init`")


def ray_options(trainer_cfg: DictConfig) -> RayTrainOptions | None:
    """The trainer config's `ray` node, checked; None when the job trains in this process."""
    node = trainer_cfg.get("ray")
    if node is None:
        return None
    values = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    options = RayTrainOptions.parse(values)  # type: ignore[arg-type]
    require_int("trainer.ray.num_workers", options.num_workers)
    if options.cpus_per_worker <= 0:
        raise ConfigError(f"trainer.ray.cpus_per_worker must be > 0, got {options.cpus_per_worker}")
    return options


def check_ray(trainer_cfg: DictConfig) -> RayTrainOptions | None:
    """Under `trainer=ray`, fail before the job starts (no MLflow run yet) on bad options, a
    missing Ray Train, or an address where no cluster answers; the options, else None."""
    options = ray_options(trainer_cfg)
    if options is not None:
        _import_ray_train()
        _probe_address(options.address)
    return options


def lightning_options(trainer_cfg: DictConfig) -> DictConfig:
    """The trainer config without its `ray` node: what Lightning's Trainer takes."""
    if "ray" not in trainer_cfg:
        return trainer_cfg
    cfg = trainer_cfg.copy()
    with open_dict(cfg):
        cfg.pop("ray")
    return cfg


@dataclass
class RayJob:
    """One fit as the workers run it: the objects this process built, sent to every worker."""

    module: L.LightningModule
    datamodule: L.LightningDataModule
    callbacks: list[Callback]
    trainer_options: dict[str, Any]  # Lightning's Trainer arguments, less what Ray decides
    ckpt_path: str | None = None  # a resume
    test: bool = True
    pruning: Any = None  # the Optuna pruning callback (one of `callbacks`) in a sweep
    seed: int | None = None


def worker_trainer_options(trainer_cfg: DictConfig) -> dict[str, Any]:
    """The job's Lightning arguments for the workers: no progress bar (their output reaches this
    terminal line by line), paths absolute (workers run in folders of their own)."""
    values = OmegaConf.to_container(lightning_options(trainer_cfg), resolve=True)
    assert isinstance(values, dict)
    values.pop("_target_", None)
    for key in _RAY_DECIDES:
        values.pop(key, None)
    values["enable_progress_bar"] = False
    if values.get("default_root_dir"):
        values["default_root_dir"] = str(Path(values["default_root_dir"]).resolve())
    return values


@dataclass(frozen=True)
class _RunLogger:
    """The job's MLflow run as a worker opens it (a logger holds a client that cannot travel)."""

    tracking_uri: str
    run_id: str
    request_timeout: float
    request_retries: int

    @classmethod
    def of(cls, logger: Any) -> _RunLogger | None:
        if not logger:
            return None
        if not isinstance(logger, ResilientMLFlowLogger):
            raise ConfigError(
                f"trainer=ray logs through the project's MLflow logger (logger=mlflow) or none, not "
                f"{type(logger).__name__}"
            )
        return cls(logger.tracking_uri, logger.run_id, logger.request_timeout, logger.request_retries)

    def open(self) -> ResilientMLFlowLogger:
        if is_remote(self.tracking_uri):
            apply_process_defaults()
        # With a run id, MLFlowLogger reopens that run; the experiment name is not used.
        return ResilientMLFlowLogger(
            tracking_uri=self.tracking_uri,
            run_id=self.run_id,
            request_timeout=self.request_timeout,
            request_retries=self.request_retries,
        )


@dataclass
class _WorkerEnd:
    """Rank 0's end of the fit, returned to this process."""

    outcome: FitOutcome
    fit_loop: dict[str, Any]  # epochs and steps (Lightning's loop state)
    callbacks: list[dict[str, Any]]  # each callback's state_dict, in the job's order
    state_dict: dict[str, torch.Tensor] | None  # the final weights when there is no best checkpoint
    held: HeldBack | None = None  # what rank 0 could not log (a tracking server outage)
    failure: str | None = None
    failed_step: int | None = None


def fit_on_ray(options: RayTrainOptions, job: RayJob, trainer: L.Trainer) -> FitOutcome:
    """Run `job` on Ray Train workers; leave `job.module` with the best weights and `trainer`
    (this process's, never fit) in the workers' end state, as after a fit here."""
    ray, TorchTrainer, ScalingConfig, RunConfig = _import_ray_train()
    folder = _checkpoint_folder(job, trainer)
    # Beside the checkpoint folder, not in it: Lightning warns about a folder that is not empty.
    marker = folder.parent / f".ray-reach-{uuid.uuid4().hex}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    started_here = _connect(ray, options)
    try:
        _check_resources(ray, options, fixed=started_here and not options.address)
        payload = {
            "job": ray.put(job),
            "logger": _RunLogger.of(trainer.logger),
            "marker": str(marker),
            "accelerator": "gpu" if options.use_gpu else "cpu",
        }
        storage = Path(options.storage_path or _run_folder(job) / "ray").resolve()
        name = f"fit-{datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        log.info(
            "training on Ray: %d workers (%s CPUs%s each), checkpoints in %s",
            options.num_workers,
            f"{options.cpus_per_worker:g}",
            " and a GPU" if options.use_gpu else "",
            folder,
        )
        ray_trainer = TorchTrainer(
            _train_worker,
            train_loop_config=payload,
            scaling_config=ScalingConfig(
                num_workers=options.num_workers,
                use_gpu=options.use_gpu,
                resources_per_worker={"CPU": options.cpus_per_worker},
            ),
            run_config=RunConfig(name=name, storage_path=str(storage)),
        )
        try:
            result = ray_trainer.fit()
        except Exception as err:
            user = _worker_error(err)
            if user is None:
                raise
            raise user from err
        end = result.return_value
    finally:
        marker.unlink(missing_ok=True)
        if started_here:
            ray.shutdown()
    assert isinstance(end, _WorkerEnd), "Ray Train returned no result from rank 0"
    _adopt(end, job, trainer)
    return end.outcome


def _adopt(end: _WorkerEnd, job: RayJob, trainer: L.Trainer) -> None:
    """This process's trainer, callbacks, logger and module as rank 0 left its own."""
    trainer.fit_loop.load_state_dict(end.fit_loop)
    for callback, state in zip(job.callbacks, end.callbacks, strict=True):
        if state:
            callback.load_state_dict(state)
    if job.pruning is not None:
        job.pruning.pruned = end.outcome.pruned
    if end.outcome.best_model_path:
        job.module.load_state_dict(load_checkpoint(end.outcome.best_model_path)["state_dict"])
    elif end.state_dict is not None:
        job.module.load_state_dict(end.state_dict)
    logger = trainer.logger
    if end.held is not None and isinstance(logger, ResilientMLFlowLogger):
        # The job's end (`logger.settle()`) retries sending these, or keeps them on disk.
        logger.held, logger.failure, logger.failed_step = end.held, end.failure, end.failed_step


def _train_worker(config: dict[str, Any]) -> _WorkerEnd | None:
    """One Ray Train worker: the job's fit and test as one DDP rank; rank 0 returns its end."""
    import ray
    from ray.train import get_context
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    quiet()
    torch.set_float32_matmul_precision("high")
    if not Path(config["marker"]).exists():
        raise ConfigError(
            f"trainer=ray: the Ray worker on {socket.gethostname()} cannot reach the run folder "
            f"{Path(config['marker']).parent} (checkpoints): on a cluster of several machines put it on "
            "a file system every node mounts (paths.log_dir=/shared/logs, or hydra.run.dir=...)"
        )
    job: RayJob = ray.get(config["job"])
    if job.seed is not None:
        L.seed_everything(job.seed, workers=True, verbose=False)
    run: _RunLogger | None = config["logger"]
    logger = run.open() if run is not None else False
    trainer = L.Trainer(
        **job.trainer_options,
        accelerator=config["accelerator"],
        devices="auto",
        strategy=RayDDPStrategy(),
        plugins=[RayLightningEnvironment()],
        callbacks=job.callbacks,
        logger=logger,
    )
    trainer = prepare_trainer(trainer)
    outcome = fit_and_test(trainer, job.module, job.datamodule, job.ckpt_path, job.test, job.pruning)
    if get_context().get_world_rank() != 0:
        return None
    end = _WorkerEnd(
        outcome=outcome,
        fit_loop=trainer.fit_loop.state_dict(),
        callbacks=[callback.state_dict() for callback in job.callbacks],
        state_dict=None
        if outcome.best_model_path
        else {k: v.cpu() for k, v in job.module.state_dict().items()},
    )
    if isinstance(logger, ResilientMLFlowLogger) and logger.settle():
        end.held, end.failure, end.failed_step = logger.held, logger.failure, logger.failed_step
    return end


def _checkpoint_folder(job: RayJob, trainer: L.Trainer) -> Path:
    """Where the workers write checkpoints: the ModelCheckpoint's folder, else the run folder."""
    checkpoint = checkpoint_callback(trainer)
    if checkpoint is not None and checkpoint.dirpath:
        return Path(checkpoint.dirpath).resolve()
    return _run_folder(job)


def _run_folder(job: RayJob) -> Path:
    """The job's run folder (Lightning's `default_root_dir`)."""
    return Path(job.trainer_options.get("default_root_dir") or os.getcwd()).resolve()


def _import_ray_train() -> tuple[Any, Any, Any, Any]:
    """Ray and Ray Train's classes, or a one-line ConfigError saying how to install them."""
    try:
        import ray
        import ray.train.lightning  # noqa: F401  (the workers import it; fail here, not there)
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError as err:
        raise ConfigError(f"trainer=ray needs Ray Train, an optional extra: {INSTALL_HINT}") from err
    from ray.train import Result

    if "return_value" not in getattr(Result, "__dataclass_fields__", {}):
        raise ConfigError(
            f"trainer=ray needs a Ray Train that returns the workers' result (Ray {ray.__version__} "
            "does not; Ray 2.60 is tested): pip install -U 'forecast[ray]'"
        )
    return ray, TorchTrainer, ScalingConfig, RunConfig


def _connect(ray: Any, options: RayTrainOptions) -> bool:
    """Start or join Ray unless this process already has; whether it was done here (then the
    job shuts it down). An address nobody answers at is a ConfigError in seconds (`ray.init`
    would wait minutes); so is `auto` with no cluster to find."""
    if ray.is_initialized():
        return False
    address = options.address
    _probe_address(address)
    kwargs = dict(options.init_kwargs)
    # The workers log to the job's MLflow run: the tracking server's credentials and limits.
    runtime_env = dict(kwargs.pop("runtime_env", None) or {})
    forwarded = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    runtime_env["env_vars"] = {**forwarded, **(runtime_env.get("env_vars") or {})}
    runtime_env.setdefault("worker_process_setup_hook", f"{__name__}.{quiet_ray_processes.__name__}")
    kwargs.setdefault("include_dashboard", False)
    try:
        # "local" always starts a fresh instance: None would join a cluster left on this machine.
        ray.init(address=address or "local", runtime_env=runtime_env, **kwargs)
    except ConnectionError as err:
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ConfigError(
            f"trainer.ray.address={address}: no Ray cluster to join ({first.strip()}): start one with "
            "`ray start --head`, or set trainer.ray.address=null for a local Ray"
        ) from err
    return True


def _check_resources(ray: Any, options: RayTrainOptions, fixed: bool) -> None:
    """Ray Train waits until the cluster has room for every worker: a local Ray started here
    (`fixed`) never grows, so too small a one is a ConfigError; a cluster may (autoscaling)."""
    have = ray.cluster_resources()
    need = {"CPU": options.num_workers * options.cpus_per_worker}
    if options.use_gpu:
        need["GPU"] = float(options.num_workers)
    short = [
        f"{need[k]:g} {k}s, the cluster has {have.get(k, 0):g}" for k in need if have.get(k, 0) < need[k]
    ]
    if not short:
        return
    what = f"trainer.ray: {options.num_workers} workers need {'; '.join(short)}"
    if fixed:
        raise ConfigError(f"{what}: lower trainer.ray.num_workers or trainer.ray.cpus_per_worker")
    log.warning("%s: the fit waits until the cluster grows (autoscaling) or resources free up", what)


def quiet_ray_processes() -> None:
    """Run by every process of the job (Ray's `worker_process_setup_hook`). Without Ray's
    dashboard (`ray[default]`) Ray Train's placement-group cleaner warns every 2 s for the whole
    fit that the State API is unavailable; it only matters when the Train controller dies (the
    controller removes its placement group itself), so that warning is dropped."""
    logging.getLogger(_CLEANER_LOGGER).addFilter(lambda record: _STATE_API not in record.getMessage())


_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
_STATE_API = "State API may be temporarily unavailable"


def _probe_address(address: str | None) -> None:
    """`address` (or RAY_ADDRESS for `auto`) answering, unless Ray is started here."""
    if address == "auto" and os.environ.get("RAY_ADDRESS"):
        _probe(os.environ["RAY_ADDRESS"], "RAY_ADDRESS")
    elif address not in (None, "auto", "local"):
        _probe(address, "trainer.ray.address")


def _probe(address: str, key: str) -> None:
    """A TCP connection to the head's `host:port` (a `ray://` client address too), or a ConfigError."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{key}={address}: not a Ray address; use host:port, auto, or null (a local Ray)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise ConfigError(
            f"{key}={address}: no Ray cluster answers there ({err.strerror or err}): start one with "
            "`ray start --head`, or fix the address"
        ) from None


def _worker_error(err: BaseException) -> ForecastError | None:
    """The ForecastError a worker raised (bad data, an unreachable folder), without Ray's wrapping."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [err]
    while todo:
        current = todo.pop(0)
        if any(current is e for e in seen):
            continue
        seen.append(current)
        cause = getattr(current, "cause", None)  # a RayTaskError keeps the task's exception here
        if isinstance(cause, ForecastError):
            return cause
        # (A RayTaskError subclasses the task's exception too, its text holding the traceback.)
        if isinstance(current, ForecastError) and type(current).__module__.startswith("forecast"):
            return current
        failures = getattr(current, "worker_failures", None)  # Ray Train's WorkerGroupError
        if isinstance(failures, dict):
            todo.extend(e for _, e in sorted(failures.items()) if isinstance(e, BaseException))
        for linked in (getattr(current, "cause", None), current.__cause__, current.__context__):
            if isinstance(linked, BaseException):
                todo.append(linked)
    return None
