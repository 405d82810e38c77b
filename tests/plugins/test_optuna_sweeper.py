"""Tests of the `hydra/sweeper=forecast_optuna` plugin in hydra_plugins/forecast_optuna_sweeper."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.forecast_optuna_sweeper import trial_from_config
from hydra_plugins.forecast_optuna_sweeper._impl import (
    SWEEP_PARAMS_ATTR,
    OptunaSweeperImpl,
    mask_storage,
    resolve_storage,
)
from hydra_plugins.forecast_optuna_sweeper._search_space import parse_search_space, to_override_value

REPO_ROOT = Path(__file__).resolve().parents[2]

# --- search-space parsing -------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("x=choice(32, 64, 128)", CategoricalDistribution([32, 64, 128])),
        ("model=choice(lstm, gru)", CategoricalDistribution(["lstm", "gru"])),
        ("x=choice('a b', \"c,d\", '32')", CategoricalDistribution(["a b", "c,d", "32"])),
        ("x=lstm,gru", CategoricalDistribution(["lstm", "gru"])),
        # Hydra's range() excludes its stop value, Optuna's high is inclusive.
        ("x=range(1, 4)", IntDistribution(1, 3)),
        ("x=range(0, 10, 3)", IntDistribution(0, 9, step=3)),
        ("x=range(1, 10, 4)", IntDistribution(1, 9, step=4)),
        ("x=range(8, 0, -2)", IntDistribution(2, 8, step=2)),
        ("x=tag(log, range(1, 9))", IntDistribution(1, 8, log=True)),
        ("x=range(0, 1, 0.25)", FloatDistribution(0.0, 0.75, step=0.25)),
        ("x=interval(0.0, 0.5)", FloatDistribution(0.0, 0.5)),
        # Hydra parses interval() bounds as floats, so ints need tag(int, ...).
        ("x=interval(1, 4)", FloatDistribution(1.0, 4.0)),
        ("x=tag(log, interval(1e-4, 1e-2))", FloatDistribution(1e-4, 1e-2, log=True)),
        ("x=tag(int, interval(1, 8))", IntDistribution(1, 8)),
        ("x=tag(int, log, interval(1, 64))", IntDistribution(1, 64, log=True)),
    ],
)
def test_sweep_override_becomes_distribution(override: str, expected: object) -> None:
    space = parse_search_space([override])
    assert list(space.distributions.values()) == [expected]
    assert space.fixed == {}


def test_param_names_keep_override_prefix_and_package() -> None:
    space = parse_search_space(["+model.extra=choice(1, 2)", "opt@trainer=choice(adam, sgd)"])
    assert list(space.distributions) == ["+model.extra", "opt@trainer"]


def test_plain_overrides_pass_through_verbatim() -> None:
    space = parse_search_space(
        ["trainer.max_epochs=3", "+trainer.foo='a b'", "~model.dropout", "x=choice(1, 2)"]
    )
    assert list(space.distributions) == ["x"]
    assert list(space.fixed.values()) == ["trainer.max_epochs=3", "+trainer.foo='a b'", "~model.dropout"]


def test_later_override_replaces_earlier_one() -> None:
    # The sweeper puts hydra.sweeper.params first and command-line overrides after them.
    space = parse_search_space(["x=interval(0, 1)", "y=choice(1, 2)", "x=0.5", "y=choice(3, 4)"])
    assert space.distributions == {"y": CategoricalDistribution([3, 4])}
    assert space.fixed == {"x": "x=0.5"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("x=glob(*)", "only choice"),
        ("x=tag(foo, interval(0, 1))", r"unsupported tag\(s\) \['foo'\]"),
        ("x=tag(log, choice(1, 2))", r"unsupported tag\(s\) \['log'\] for choice"),
        ("x=range(5, 1)", "empty"),
        ("x=tag(log, range(0, 10, 2))", "step 1"),
        ("x=tag(log, range(0, 1, 0.1))", "float step"),
        ("x=tag(int, interval(0.5, 2))", "integral"),
        ("x=choice([1, 2], [3])", "str, int, float, bool or null"),
        ("x=interval(5, 1)", ""),  # Optuna's own low > high error, prefixed with the name
    ],
)
def test_unsupported_forms_name_the_param(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=rf"Search space of 'x' \(.*\): .*{message}"):
        parse_search_space([override])


@pytest.mark.parametrize(
    "value",
    ["lstm", "32", "true", "null", "a b", "a,b", "it's", "${a}", "", 1, 1.5, 1e-5, True, None],
)
def test_sampled_values_round_trip_through_the_override_grammar(value: object) -> None:
    parsed = OverridesParser.create().parse_override(f"k={to_override_value(value)}").value()
    assert parsed == value and type(parsed) is type(value)


def test_relative_sqlite_storage_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert (
        resolve_storage("sqlite:///sub/optuna.db?timeout=5")
        == f"sqlite:///{tmp_path}/sub/optuna.db?timeout=5"
    )
    assert (tmp_path / "sub").is_dir()
    for url in ["sqlite:////abs/optuna.db", "sqlite:///:memory:", "postgresql://u@h/db", None]:
        assert resolve_storage(url) == url


def test_storage_password_is_masked() -> None:
    assert (
        mask_storage("postgresql://user:s3cret@db.host:5432/optuna")
        == "postgresql://user:***@db.host:5432/optuna"
    )
    assert mask_storage("mysql+pymysql://u:p@h/db?charset=utf8") == "mysql+pymysql://u:***@h/db?charset=utf8"
    assert mask_storage("sqlite:////abs/optuna.db") == "sqlite:////abs/optuna.db"
    assert mask_storage(None) == "in-memory"


def _sweeper(**overrides: object) -> OptunaSweeperImpl:
    kwargs: dict[str, object] = {
        "sampler": optuna.samplers.RandomSampler(),
        "pruner": None,
        "direction": "minimize",
        "study_name": None,
        "storage": None,
        "n_trials": 1,
        "n_jobs": 1,
        "params": None,
    }
    return OptunaSweeperImpl(**{**kwargs, **overrides})  # type: ignore[arg-type]


def test_sweep_without_a_completed_trial_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweeper = _sweeper()
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "run")}}})
    study = optuna.create_study(study_name="s")
    study.tell(study.ask(), state=TrialState.PRUNED)
    study.tell(study.ask(), state=TrialState.FAIL)
    sweeper._save_best(study)
    assert (
        capsys.readouterr().out
        == "Sweep 's': no trial completed (0 complete, 1 pruned, 1 failed); no best trial.\n"
    )
    assert not (tmp_path / "run").exists()


def test_parent_run_logs_the_search_space_as_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from forecast import tuning

    assert tuning.SWEEP_PARAMS_ATTR == SWEEP_PARAMS_ATTR  # the plugin sets what the trainer reads
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = {
        "model.hidden_size": "choice(32, 64, 128)",
        "+model.extra": "interval(0.0, 1.0)",
        "opt@trainer": "choice(adam, sgd)",
        "optuna.storage": "postgresql://user:***@host/db",
    }
    study = optuna.create_study(study_name="s")
    study.set_user_attr(SWEEP_PARAMS_ATTR, space)
    parent = tuning.parent_run(study.ask(), "exp", str(tmp_path))
    assert study.user_attrs[tuning.PARENT_ATTR] == parent
    run = MlflowClient().get_run(parent)
    assert run.data.tags[tuning.SWEEP_TAG] == "s"
    assert run.data.params == {
        "model.hidden_size": "choice(32, 64, 128)",
        "model.extra": "interval(0.0, 1.0)",
        "opt_trainer": "choice(adam, sgd)",
        "optuna.storage": "postgresql://user:***@host/db",
    }
    # Another worker's copy of the study (no parent attribute yet) finds the same parent.
    other = optuna.create_study(study_name="s")
    assert tuning.parent_run(other.ask(), "exp", str(tmp_path)) == parent
    assert len(MlflowClient().search_runs([run.info.experiment_id])) == 1


def test_multi_objective_direction_is_rejected() -> None:
    with pytest.raises(ValueError, match="multi-objective"):
        OptunaSweeperImpl(
            sampler=optuna.samplers.RandomSampler(),
            pruner=None,
            direction=["minimize", "maximize"],
            study_name=None,
            storage=None,
            n_trials=1,
            n_jobs=1,
            params=None,
        )


# --- config registration ----------------------------------------------------------------


def test_sweeper_config_and_sampler_pruner_options(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("x: 0\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        default = compose("config", ["hydra/sweeper=forecast_optuna"], return_hydra_config=True)
        chosen = compose(
            "config",
            ["hydra/sweeper=forecast_optuna", "hydra/sweeper/sampler=random", "hydra/sweeper/pruner=median"],
            return_hydra_config=True,
        )
    sweeper = default.hydra.sweeper
    assert sweeper._target_.endswith("optuna_sweeper.ForecastOptunaSweeper")
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed is None
    assert sweeper.pruner is None
    assert (sweeper.storage, sweeper.study_name, sweeper.direction) == (
        "sqlite:///optuna.db",
        None,
        "minimize",
    )
    assert chosen.hydra.sweeper.sampler._target_ == "optuna.samplers.RandomSampler"
    assert chosen.hydra.sweeper.pruner._target_ == "optuna.pruners.MedianPruner"


# --- trial handoff ------------------------------------------------------------------------


def test_trial_from_config_is_none_outside_a_sweep() -> None:
    assert trial_from_config(OmegaConf.create({"x": 1})) is None
    assert trial_from_config(OmegaConf.create({"optuna": {"study_name": "s", "storage": None}})) is None


def test_trial_from_config_reports_to_the_shared_study(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(study_name="s", storage=storage)
    study.ask()
    asked = study.ask()
    cfg = OmegaConf.create({"optuna": {"study_name": "s", "storage": storage, "trial_number": asked.number}})

    trial = trial_from_config(cfg)
    assert trial is not None and trial.number == 1
    trial.report(3.0, step=0)
    assert not trial.should_prune()  # no pruner configured for the sweep: never prune

    strict = trial_from_config(cfg, pruner=optuna.pruners.ThresholdPruner(upper=1.0))
    assert strict is not None and strict.should_prune()
    reloaded = optuna.load_study(study_name="s", storage=storage)
    assert reloaded.trials[1].intermediate_values == {0: 3.0}


# --- end to end: a Hydra app run as a subprocess -------------------------------------------

APP = """
import hydra
import optuna
from omegaconf import DictConfig

from hydra_plugins.forecast_optuna_sweeper import trial_from_config


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig) -> float | None:
    trial = trial_from_config(cfg)
    trial.set_user_attr("job_saw_z", cfg.z)
    if cfg.mode == "fail" or (cfg.mode == "flaky" and trial.number == 1):
        raise RuntimeError("boom from the job")
    if cfg.mode == "none":
        return None
    value = (cfg.x - 2) ** 2 + cfg.y + cfg.z
    if cfg.mode == "prune":
        for step in range(3):
            # Odd trials report a curve far above the threshold pruner's bound.
            trial.report(100.0 + step if trial.number % 2 else value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return value


if __name__ == "__main__":
    main()
"""

CONFIG = """
x: 0.0
y: 0
z: 0
mode: ok
hydra:
  sweeper:
    params:
      x: interval(-5, 5)
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "config.yaml").write_text(textwrap.dedent(CONFIG))
    return tmp_path


def run_app(app_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """Run the app's multirun with this plugin; stdout and stderr are merged."""
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "app.py", "-m", "hydra/sweeper=forecast_optuna", *overrides],
        cwd=app_dir,
        env={**os.environ, "PYTHONPATH": pythonpath},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )


def load_trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="app", storage=storage).trials


@pytest.mark.slow  # a subprocess per sweep
def test_sweep_writes_results_and_resumes(app_dir: Path) -> None:
    storage = f"sqlite:///{app_dir}/study.db"
    common = [f"hydra.sweeper.storage={storage}", "y=choice(0, 1)", "z=3"]

    first = run_app(app_dir, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={app_dir}/run1", *common)
    assert first.returncode == 0, first.stdout
    trials = load_trials(storage)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for t in trials:
        # x from the config file's params block, y from the command line, z fixed.
        assert set(t.params) == {"x", "y"}
        assert math.isclose(t.value, (t.params["x"] - 2) ** 2 + t.params["y"] + 3)
        assert t.user_attrs == {"job_saw_z": 3}
    results = OmegaConf.load(app_dir / "run1" / "optimization_results.yaml")
    best = min(trials, key=lambda t: t.value)
    assert results.best_value == best.value and dict(results.best_params) == best.params
    # The sweep ends with a block naming the best trial, its value, params and the results file.
    params = ", ".join(
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in best.params.items()
    )
    block = [
        f"Sweep 'app' done (3 complete, 0 pruned, 0 failed). Best trial: {best.number}",
        f"  value = {best.value:.6g} (minimize)",
        f"  params:  {params}",
        f"  results: {(app_dir / 'run1').resolve() / 'optimization_results.yaml'}",
    ]
    assert "\n".join(block) in first.stdout
    # The search space and settings, for the trainer's MLflow parent run.
    attrs = optuna.load_study(study_name="app", storage=storage).user_attrs
    assert attrs[SWEEP_PARAMS_ATTR] == {
        "x": "interval(-5, 5)",
        "y": "choice(0, 1)",
        "optuna.sampler": "TPESampler(seed=None, n_startup_trials=10)",
        "optuna.pruner": "none",
        "optuna.direction": "minimize",
        "optuna.n_trials": "3",
        "optuna.storage": storage,
    }

    second = run_app(app_dir, "hydra.sweeper.n_trials=5", f"hydra.sweep.dir={app_dir}/run2", *common)
    assert second.returncode == 0, second.stdout
    resumed = load_trials(storage)
    assert [t.number for t in resumed] == [0, 1, 2, 3, 4]
    assert [t.value for t in resumed[:3]] == [t.value for t in trials]
    assert all(t.state == TrialState.COMPLETE for t in resumed)
    # Job folders continue the numbering instead of restarting at 0.
    assert sorted(p.name for p in (app_dir / "run2").iterdir() if p.is_dir()) == ["3", "4"]

    third = run_app(app_dir, "hydra.sweeper.n_trials=5", f"hydra.sweep.dir={app_dir}/run3", *common)
    assert third.returncode == 0, third.stdout
    assert "already reached" in third.stdout
    assert len(load_trials(storage)) == 5


@pytest.mark.slow  # a subprocess per sweep
def test_pruned_trials_and_default_storage(app_dir: Path) -> None:
    result = run_app(
        app_dir,
        "mode=prune",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,upper:50.0}",
        "x=choice(1.0, 3.0)",  # replaces the config file's interval
        f"hydra.sweep.dir={app_dir}/run",
    )
    assert result.returncode == 0, result.stdout
    assert "Error executing job" not in result.stdout  # a prune is not reported as an error
    # Default storage: optuna.db in the directory the sweep was started from.
    trials = load_trials(f"sqlite:///{app_dir}/optuna.db")
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED] * 2
    assert all(t.params["x"] in (1.0, 3.0) for t in trials)
    assert trials[1].intermediate_values == {0: 100.0} and trials[1].value == 100.0
    assert (app_dir / "run" / "optimization_results.yaml").exists()


@pytest.mark.slow  # a subprocess per sweep
def test_failed_trial_after_the_first_batch_does_not_stop_the_sweep(app_dir: Path) -> None:
    storage = f"sqlite:///{app_dir}/study.db"
    result = run_app(app_dir, "mode=flaky", "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={storage}")
    assert result.returncode == 0, result.stdout
    assert "Trial 1 FAIL (RuntimeError: boom from the job)" in result.stdout
    states = [t.state for t in load_trials(storage)]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]


@pytest.mark.slow  # a subprocess per sweep
@pytest.mark.parametrize(
    ("mode", "message"), [("fail", "boom from the job"), ("none", "must return a number")]
)
def test_first_batch_all_failing_aborts_with_the_error(app_dir: Path, mode: str, message: str) -> None:
    storage = f"sqlite:///{app_dir}/study.db"
    result = run_app(app_dir, f"mode={mode}", "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={storage}")
    assert result.returncode != 0
    assert message in result.stdout
    assert [t.state for t in load_trials(storage)] == [TrialState.FAIL]
