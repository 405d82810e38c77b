"""Sweep loop: ask Optuna for trials, launch them as Hydra jobs, tell Optuna the results."""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import Trial, TrialState

from forecast.trials import resolve_storage

from ._search_space import SearchSpace, parse_search_space, to_override_value

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"
# Study user attribute holding the search space and settings ({name: str}); the training
# side (forecast.tuning.SWEEP_PARAMS_ATTR) logs it as the sweep's MLflow parent run params.
SWEEP_PARAMS_ATTR = "sweep_params"


def mask_storage(url: str | None) -> str:
    """The storage URL with any password hidden: postgresql://user:***@host/db."""
    if url is None:
        return "in-memory"
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: hide what looks like user:password@
        return re.sub(r"(//[^/:@]*):[^/@]*@", r"\1:***@", url)


def _describe(node: Any, obj: Any) -> str:
    """`TPESampler(seed=42, n_startup_trials=10)` from a `_target_` config node, else the class."""
    if isinstance(node, DictConfig) and "_target_" in node:
        args = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "_target_"}
        return f"{str(node._target_).rsplit('.', 1)[-1]}({', '.join(f'{k}={v}' for k, v in args.items())})"
    return "none" if obj is None else type(obj).__name__


def handoff_overrides(study_name: str, storage: str | None, trial_number: int) -> list[str]:
    """Overrides that tell a job which study and trial it runs (see `trial_from_config`)."""
    storage_value = "null" if storage is None else to_override_value(storage)
    return [
        f"++optuna.study_name={to_override_value(study_name)}",
        f"++optuna.storage={storage_value}",
        f"++optuna.trial_number={trial_number}",
    ]


class OptunaSweeperImpl(Sweeper):
    """Runs the study; kept out of `optuna_sweeper.py` so plugin discovery skips `import optuna`."""

    def __init__(
        self,
        sampler: optuna.samplers.BaseSampler,
        pruner: optuna.pruners.BasePruner | None,
        direction: Any,
        study_name: str | None,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        params: DictConfig | dict[str, Any] | None,
    ) -> None:
        if direction not in ("minimize", "maximize"):
            raise ValueError(
                f"hydra.sweeper.direction must be 'minimize' or 'maximize', got {direction!r}"
                " (multi-objective studies are not supported)"
            )
        if n_trials < 1 or n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_trials and n_jobs must be >= 1, got {n_trials} and {n_jobs}")
        self.sampler = sampler
        self.pruner = pruner
        self.direction: str = direction
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.params = params or {}
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Create the launcher the way Hydra's own sweepers do."""
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        """Run trials until the study holds `n_trials` finished ones, then report the best."""
        assert self.config is not None and self.launcher is not None
        space = parse_search_space(self._params_as_overrides() + list(arguments))
        if not space.distributions:
            raise ValueError(
                "Nothing to optimize: set hydra.sweeper.params or pass sweep overrides such as"
                " 'model.lr=tag(log, interval(1e-4, 1e-2))'"
            )
        study_name = self.study_name or str(self.config.hydra.job.name)
        storage = resolve_storage(self.storage)
        study = self._open_study(study_name, storage)
        study.set_user_attr(SWEEP_PARAMS_ATTR, self._sweep_params(space, storage))
        existing = study.get_trials(deepcopy=False)
        n_finished = sum(t.state.is_finished() for t in existing)
        n_running = sum(t.state == TrialState.RUNNING for t in existing)
        log.info(
            "Study '%s' (%s, %s): %d finished trial(s), target n_trials=%d",
            study_name,
            mask_storage(storage),
            self.direction,
            n_finished,
            self.n_trials,
        )
        if n_running:
            # Left by an interrupted run (or another sweeper on the same study): not
            # counted, not touched.
            log.warning("Study has %d trial(s) still marked RUNNING; ignoring them", n_running)
        if n_finished >= self.n_trials:
            log.info("n_trials=%d already reached; nothing to run", self.n_trials)

        # Output folders are numbered after every trial the study has seen, so a resumed
        # sweep into the same sweep dir does not overwrite earlier jobs.
        job_idx = len(existing)
        stale = {t.number for t in existing if t.state == TrialState.RUNNING}
        first_batch = True
        while (remaining := self._remaining(study, stale)) > 0:
            trials = [study.ask(space.distributions) for _ in range(min(self.n_jobs, remaining))]
            batch = [self._job_overrides(t, space, study_name, storage) for t in trials]
            try:
                self.validate_batch_is_legal(batch)
                returns = self.launcher.launch(batch, initial_job_idx=job_idx)
            except BaseException:
                for trial in trials:
                    study.tell(trial, state=TrialState.FAIL)
                raise
            errors = [self._tell(study, t, r) for t, r in zip(trials, returns, strict=True)]
            if first_batch and all(e is not None for e in errors):
                # Likely a bug or a misconfiguration: surface it instead of a sweep of FAILs.
                first_error = errors[0]
                assert first_error is not None
                raise first_error
            first_batch = False
            job_idx += len(trials)
        self._save_best(study)

    def _open_study(self, study_name: str, storage: str | None) -> optuna.Study:
        """Create or load the study; retried because workers starting together on a new
        database race to create its schema (the loser gets an IntegrityError)."""
        import sqlalchemy.exc

        for attempt in range(5):
            try:
                return optuna.create_study(
                    study_name=study_name,
                    storage=storage,
                    sampler=self.sampler,
                    pruner=self.pruner,
                    direction=self.direction,
                    load_if_exists=True,
                )
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as err:
                if attempt == 4:
                    raise
                log.warning("opening study %s failed (%s); retrying", study_name, type(err).__name__)
                time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    def _sweep_params(self, space: SearchSpace, storage: str | None) -> dict[str, str]:
        """Search space (param -> sweep expression) and the sweep's settings, as strings."""
        sweeper = OmegaConf.select(self.config, "hydra.sweeper", default=None) if self.config else None
        sampler, pruner = (None, None) if sweeper is None else (sweeper.get("sampler"), sweeper.get("pruner"))
        return {
            **space.expressions,
            "optuna.sampler": _describe(sampler, self.sampler),
            "optuna.pruner": _describe(pruner, self.pruner),
            "optuna.direction": self.direction,
            "optuna.n_trials": str(self.n_trials),
            "optuna.storage": mask_storage(storage),
        }

    def _remaining(self, study: optuna.Study, stale: set[int]) -> int:
        """Trials still to start, re-read before every batch.

        Several workers may share one study (the cluster recipe): trials another worker is
        running count as taken, so together they stop at `n_trials`. Trials already RUNNING
        when this sweep started are taken to be left over from an interrupted run.
        """
        trials = study.get_trials(deepcopy=False)
        taken = sum(
            t.state.is_finished() or (t.state == TrialState.RUNNING and t.number not in stale) for t in trials
        )
        return self.n_trials - taken

    def _params_as_overrides(self) -> list[str]:
        params = self.params
        if isinstance(params, DictConfig):
            params = OmegaConf.to_container(params, resolve=True)
        assert isinstance(params, dict)
        return [
            f"{name}={value if isinstance(value, str) else to_override_value(value)}"
            for name, value in params.items()
        ]

    @staticmethod
    def _job_overrides(trial: Trial, space: SearchSpace, study_name: str, storage: str | None) -> list[str]:
        sampled = [f"{name}={to_override_value(trial.params[name])}" for name in space.distributions]
        return [*sampled, *space.fixed.values(), *handoff_overrides(study_name, storage, trial.number)]

    def _tell(self, study: optuna.Study, trial: Trial, ret: JobReturn) -> Exception | None:
        """Record one job's outcome; return the error if the trial failed."""
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        # Checked before `return_value`, which would print "Error executing job" for a
        # prune: the job's exception is the JobReturn's `_return_value` field.
        if ret.status == JobStatus.FAILED and isinstance(ret._return_value, optuna.TrialPruned):
            frozen = study.tell(trial, state=TrialState.PRUNED)
            log.info("Trial %d PRUNED (value=%s): %s", trial.number, _fmt(frozen.value), params)
            return None
        try:
            result = ret.return_value  # re-raises the job's exception
        except Exception as e:
            study.tell(trial, state=TrialState.FAIL)
            log.warning("Trial %d FAIL (%s: %s): %s", trial.number, type(e).__name__, e, params)
            return e
        value = _as_float(result)
        if value is None:
            error = ValueError(
                f"Trial {trial.number}: the task function must return a number, got {result!r}"
            )
            study.tell(trial, state=TrialState.FAIL)
            log.warning("Trial %d FAIL (%s): %s", trial.number, error, params)
            return error
        study.tell(trial, value)
        log.info("Trial %d COMPLETE value=%s: %s", trial.number, _fmt(value), params)
        return None

    def _save_best(self, study: optuna.Study) -> None:
        """Write the results file and print the best trial (a block on stdout)."""
        assert self.config is not None
        trials = study.get_trials(deepcopy=False)
        counts = ", ".join(
            f"{sum(t.state == s for t in trials)} {word}"
            for s, word in (
                (TrialState.COMPLETE, "complete"),
                (TrialState.PRUNED, "pruned"),
                (TrialState.FAIL, "failed"),
            )
        )
        if not any(t.state == TrialState.COMPLETE for t in trials):
            print(f"Sweep '{study.study_name}': no trial completed ({counts}); no best trial.", flush=True)
            return
        best = study.best_trial
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        results = {
            "name": "optuna",
            "study_name": study.study_name,
            "best_trial": best.number,
            "best_params": best.params,
            "best_value": best.value,
        }
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
        metric = OmegaConf.select(self.config, "optimized_metric", default=None) or "value"
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())
        block = [
            f"Sweep '{study.study_name}' done ({counts}). Best trial: {best.number}",
            f"  {metric} = {_fmt(best.value)} ({self.direction})",
            f"  params:  {params}",
            f"  results: {sweep_dir / RESULTS_FILE}",
        ]
        print("\n".join(block), flush=True)


def _as_float(result: Any) -> float | None:
    # Accepts anything float() takes except str/bool (e.g. a 0-d torch tensor).
    if result is None or isinstance(result, (str, bytes, bool)):
        return None
    try:
        value = float(result)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else repr(value)
