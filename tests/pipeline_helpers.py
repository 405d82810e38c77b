"""Run the pipelines as a user would: as subprocesses, from a working folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Small enough for CI, large enough that every stage runs: 2 epochs of 3 batches.
TINY_TRAIN = [
    "data=file",
    "data.freq=h",
    "data.input_size=24",
    "data.horizon=6",
    "data.season_length=24",
    "data.batch_size=16",
    "model.hidden_size=16",
    "model.head_hidden=16",
    "model.segment_len=6",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def run_script(
    folder: str, script: str, args: list[str], cwd: Path, env: dict, check: bool = True, timeout: int = 300
):
    """Run <folder>/<script> of the repository with `args`; return the CompletedProcess."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / folder / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def run_pipeline(script: str, args: list[str], cwd: Path, env: dict, check: bool = True, timeout: int = 300):
    """Run pipelines/<script> with Hydra overrides; return the CompletedProcess."""
    return run_script("pipelines", script, args, cwd, env, check, timeout)


def run_bench(script: str, args: list[str], env: dict, timeout: int = 300) -> list[dict]:
    """Run bench/<script> from the repository root; return its JSON result lines."""
    proc = run_script("bench", script, args, ROOT, env, timeout=timeout)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout
    return lines


def register_forecaster(
    forecaster, history, name: str, root: Path, input_size: int, alias: str | None = "champion"
) -> str:
    """Log `forecaster` to a run in the active MLflow store and register it as `name@<alias>`
    (None: a new version without an alias); returns its `models:/` URI."""
    import mlflow

    from forecast.tracking import ensure_experiment, log_forecaster, register

    experiment = ensure_experiment(name, root)
    example = history.groupby("unique_id").tail(input_size).head(2 * input_size).astype({"y": "float64"})
    with mlflow.start_run(experiment_id=experiment):
        info = log_forecaster(forecaster, example.reset_index(drop=True))
    version = register(info.model_uri, name, alias)
    return f"models:/{name}@{alias}" if alias else f"models:/{name}/{version.version}"


def store_with_models(
    root: Path, forecasters, history, name: str, input_size: int, alias: str | None = "champion"
) -> str:
    """A fresh store at `root`/mlflow.db holding `forecasters` registered in order as versions 1,
    2, ... of `name`, each given `alias` (`register_forecaster`); its URI. MLflow in this process
    tracks to what it did before afterwards."""
    import mlflow
    from stores import new_store

    uri = new_store(root / "mlflow.db")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        for forecaster in forecasters:
            register_forecaster(forecaster, history, name, root, input_size, alias)
    finally:
        mlflow.set_tracking_uri(previous)
    return uri


def batch_forecast(model_uri: str, history, source: Path, output: Path, **options) -> Path:
    """`history` written to `source` and forecast by the batch job into `output` (no progress
    lines; `options`: more `run_batch_forecast` arguments), the store's artifacts beside `source`;
    the output's path."""
    from forecast.batch import run_batch_forecast

    history.to_parquet(source, index=False)
    return run_batch_forecast(
        model_uri, str(source), str(output), str(source.parent), progress="none", **options
    )


class CrashAfterEpoch:
    """A Lightning callback that kills the process like `kill -9` once epoch `epoch` is saved.

    Used through `+callbacks.crash._target_=pipeline_helpers.CrashAfterEpoch` to test resume.
    """

    def __new__(cls, epoch: int):
        import os

        from lightning.pytorch.callbacks import Callback

        class _Crash(Callback):
            def on_train_epoch_end(self, trainer, pl_module):
                # Checkpoints of this epoch are written at validation end, before this hook.
                # Not in the resumed fit: it restores the run's config, this callback included.
                if trainer.current_epoch == epoch and not trainer.ckpt_path:
                    os._exit(137)

        return _Crash()


class KillMidEpoch:
    """A callback that ends every rank like `kill -9` after batch `batch` of epoch `epoch` (a
    machine lost mid-epoch), unless the fit is a resumed one. Every rank exits at the same step,
    so no rank is left waiting on the others."""

    def __new__(cls, epoch: int, batch: int):
        import os

        from lightning.pytorch.callbacks import Callback

        class _Kill(Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch_, batch_idx):
                if trainer.current_epoch == epoch and batch_idx == batch and not trainer.ckpt_path:
                    os._exit(137)

        return _Kill()


class RecordShare:
    """A callback that writes each rank's share of a mapped store to `share-<rank>.json` in the
    working folder: the series and values it maps, and its training windows."""

    def __new__(cls):
        import json

        from lightning.pytorch.callbacks import Callback

        class _Record(Callback):
            def on_train_start(self, trainer, pl_module):
                dm = trainer.datamodule
                share = dm.shard(trainer.global_rank, trainer.world_size)
                record = {
                    "values": int(share["train"].arrays.values.size),
                    "series": len(share["train"].arrays.loc),
                    "windows": len(share["train"]),
                    "total_values": int(dm.arrays.values.size),
                    "total_windows": len(dm.datasets["train"]),
                }
                with open(f"share-{trainer.global_rank}.json", "w") as out:
                    json.dump(record, out)

        return _Record()


def env_with_tests_on_path(env: dict) -> dict:
    """Subprocess env in which `pipeline_helpers` is importable (for test-only callbacks)."""
    tests = str(ROOT / "tests")
    return {**env, "PYTHONPATH": f"{tests}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else tests}
