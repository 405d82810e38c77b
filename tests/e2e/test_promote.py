"""The promotion gate: a better candidate replaces the champion, a worse one does not (exit 3), the
decision is recorded, and two gates racing never leave the registry without a champion."""

from __future__ import annotations

import subprocess
import sys
import time

import mlflow
import pandas as pd
import pytest
from app_runner import ROOT, run_inprocess
from mlflow import MlflowClient
from model_helpers import tiny_forecaster
from stores import new_store

from forecast.backtest import backtest_frame
from forecast.backtest_job import data_digest
from forecast.data import synthetic_long
from forecast.errors import KEPT_CHAMPION_EXIT, ConfigError, ModelNotFoundError
from forecast.promotion import is_better, promote
from forecast.tracking import ensure_experiment, log_forecaster

NAME = "gate"
L, H, M = 24, 6, 12
WINDOWS = ["n_windows=2", f"season_length={M}"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three untrained versions of one model, ranked by their backtest MASE on one table."""
    root = tmp_path_factory.mktemp("registry")
    uri = new_store(root / "mlflow.db")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    history = synthetic_long(n_series=4, length=90, seed=5)
    data = root / "history.parquet"
    history.to_parquet(data)
    experiment = ensure_experiment("models", root)
    scores = {}
    example = history.groupby("unique_id").tail(L).head(2 * L).reset_index(drop=True)
    for seed in range(3):
        forecaster = tiny_forecaster(history, seed=seed, segment_len=6)  # untrained, seeded: they differ
        with mlflow.start_run(experiment_id=experiment):
            info = log_forecaster(forecaster, example.astype({"y": "float64"}))
        version = mlflow.register_model(info.model_uri, NAME).version
        scores[str(version)] = backtest_frame(forecaster, history, 2, None, M).metrics["mase"]
    mlflow.set_tracking_uri(previous)
    ranked = sorted(scores, key=scores.get)  # best first
    assert scores[ranked[0]] < scores[ranked[1]] < scores[ranked[2]]
    return root, uri, data, ranked, scores


@pytest.fixture
def client(store, monkeypatch):
    root, uri, *_ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield MlflowClient(uri)
    mlflow.set_tracking_uri(None)


def set_aliases(client: MlflowClient, **versions: str | None) -> None:
    """Test set-up: point (or, for None, remove) the given aliases."""
    for alias, version in versions.items():
        if version is None:
            try:
                client.delete_registered_model_alias(NAME, alias)
            except mlflow.exceptions.MlflowException:
                pass
        else:
            client.set_registered_model_alias(NAME, alias, version)


def champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(NAME, "champion").version)


def gate(store, tmp_path, monkeypatch, capsys, *extra: str):
    root, _, data, *_ = store
    args = [
        f"name={NAME}",
        f"input={data}",
        *WINDOWS,
        f"paths.root_dir={root}",
        f"paths.log_dir={tmp_path}",
        *extra,
    ]
    return run_inprocess("promote.py", args, tmp_path, monkeypatch, capsys)


def test_better_candidate_is_promoted_and_recorded(store, client, tmp_path, monkeypatch, capsys):
    _, _, data, (best, _, worst), scores = store
    set_aliases(client, champion=worst, candidate=best)
    result = gate(store, tmp_path, monkeypatch, capsys)
    assert result.code == 0, result.stderr[-3000:]
    assert result.last_line.startswith("promoted: ") and "beats" in result.last_line
    assert champion(client) == best
    run_id = client.get_model_version(NAME, best).tags["promotion.run_id"]
    run = client.get_run(run_id)
    assert run.data.tags["decision"] == "promoted"
    assert run.data.metrics["candidate/mase"] == pytest.approx(scores[best], rel=1e-6)
    assert run.data.metrics["champion/mase"] == pytest.approx(scores[worst], rel=1e-6)
    assert (
        run.data.params["data_digest"] == data_digest(data) and run.data.params["champion_version"] == worst
    )
    new, old = client.get_model_version(NAME, best).tags, client.get_model_version(NAME, worst).tags
    assert new["promotion.decision"] == "promoted" and old["promotion.decision"] == "replaced"
    assert old["promotion.run_id"] == run_id and new["promotion.data_digest"] == data_digest(data)
    assert float(old["promotion.mase"]) == pytest.approx(scores[worst], rel=1e-5)


def test_worse_candidate_keeps_the_champion_with_exit_3(store, client, tmp_path, monkeypatch, capsys):
    _, _, _, (best, _, worst), _ = store
    set_aliases(client, champion=best, candidate=worst)
    result = gate(store, tmp_path, monkeypatch, capsys)
    assert result.code == KEPT_CHAMPION_EXIT, result.stderr[-3000:]
    assert result.last_line.startswith("kept champion: ") and f"kept version {best}" in result.last_line
    assert champion(client) == best
    assert client.get_model_version(NAME, worst).tags["promotion.decision"] == "rejected"
    assert client.get_model_version(NAME, best).tags["promotion.decision"] == "kept"


def test_margin_and_force(store, client):
    root, _, data, (best, _, worst), scores = store
    set_aliases(client, champion=worst, candidate=best)
    gain = 1 - scores[best] / scores[worst]  # the candidate's relative improvement
    kwargs = dict(name=NAME, input_path=str(data), root_dir=str(root), n_windows=2, season_length=M)
    kept = promote(margin=gain + 0.01, **kwargs)
    assert not kept.promoted and champion(client) == worst
    forced = promote(margin=gain + 0.01, force=True, **kwargs)
    assert forced.promoted and "force=true" in forced.reason and champion(client) == best
    set_aliases(client, champion=worst)
    assert promote(margin=max(gain - 0.01, 0.0), **kwargs).promoted and champion(client) == best
    again = promote(**kwargs)  # the candidate already is the champion
    assert again.promoted and "already" in again.reason and champion(client) == best
    assert is_better(0.9, 1.0, 0.05) and not is_better(0.96, 1.0, 0.05) and not is_better(1.0, 1.0, 0.0)


def test_first_candidate_becomes_champion(store, client, tmp_path, monkeypatch, capsys):
    _, _, _, (_, mid, _), _ = store
    set_aliases(client, champion=None, candidate=mid)
    result = gate(store, tmp_path, monkeypatch, capsys)
    assert result.code == 0 and "no @champion yet" in result.last_line, result.stderr[-3000:]
    assert champion(client) == mid


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["candidate_alias=nobody"], ModelNotFoundError.exit_code, "no @nobody version"),
        (["metric=coverage"], ConfigError.exit_code, "metric must be one of"),
        (["metric=pinball"], ConfigError.exit_code, "needs a quantile model"),
        (["margin=1.5"], ConfigError.exit_code, "margin must be"),
        (["name=unknown-model"], ModelNotFoundError.exit_code, "unknown-model"),
    ],
)
def test_errors_are_one_line_and_leave_the_champion(
    store, client, extra, code, message, tmp_path, monkeypatch, capsys
):
    _, _, _, (best, _, worst), _ = store
    set_aliases(client, champion=worst, candidate=best)
    result = gate(store, tmp_path, monkeypatch, capsys, *extra)
    assert result.code == code, result.stderr[-3000:]
    assert result.last_line.startswith("error: ") and message in result.last_line, result.last_line
    assert champion(client) == worst


def test_models_of_different_horizons_are_not_compared(store, client):
    root, _, data, *_ = store
    history = pd.read_parquet(data)
    example = history.groupby("unique_id").tail(L).head(2 * L).reset_index(drop=True)
    for horizon, alias in ((H, "champion"), (2 * H, "candidate")):
        with mlflow.start_run(experiment_id=ensure_experiment("models", root)):
            info = log_forecaster(
                tiny_forecaster(history, horizon=horizon, segment_len=6), example.astype({"y": "float64"})
            )
        version = mlflow.register_model(info.model_uri, "horizons").version
        client.set_registered_model_alias("horizons", alias, version)
    with pytest.raises(ConfigError, match="forecasts 12 steps and the champion .* 6"):
        promote("horizons", str(data), str(root), n_windows=2, season_length=M)
    assert client.get_model_version_by_alias("horizons", "champion").version == 1


def _race(store, env, extra: list[str], aliases: tuple[str, str], poll) -> list[subprocess.CompletedProcess]:
    """Two gates at once, each promoting its own candidate alias; `poll()` runs until both end."""
    root, _, data, *_ = store
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "pipelines" / "promote.py"),
                f"name={NAME}",
                f"input={data}",
                *WINDOWS,
            ]
            + [f"paths.root_dir={root}", f"paths.log_dir={root}/logs", f"candidate_alias={alias}", *extra],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for alias in aliases
    ]
    polls = 0
    deadline = time.monotonic() + 300
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        poll()
        polls += 1
        time.sleep(0.02)
    outs = [p.communicate(timeout=60) for p in procs]
    assert polls > 10
    return [
        subprocess.CompletedProcess(p.args, p.returncode, out, err)
        for p, (out, err) in zip(procs, outs, strict=True)
    ]


@pytest.mark.slow
def test_racing_promotions_always_leave_a_champion(store, client, subprocess_env):
    _, uri, _, (best, mid, worst), _ = store
    env = {**subprocess_env, "MLFLOW_TRACKING_URI": uri}
    set_aliases(client, champion=worst, race_a=best, race_b=mid)
    seen: set[str] = set()
    # Throughout: every read finds a champion (an alias that went missing would raise here).
    results = _race(
        store,
        env,
        ["force=true", "experiment_name=race"],
        ("race_a", "race_b"),
        lambda: seen.add(champion(client)),
    )
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    assert champion(client) in (best, mid) and seen <= {worst, best, mid}
    # From no champion at all: both gates decide, one of them wins, a champion exists at the end.
    set_aliases(client, champion=None)
    results = _race(store, env, ["experiment_name=race2"], ("race_a", "race_b"), lambda: None)
    codes = sorted(r.returncode for r in results)
    assert codes in ([0, 0], [0, KEPT_CHAMPION_EXIT]), [r.stderr[-2000:] for r in results]
    assert champion(client) in (best, mid)
