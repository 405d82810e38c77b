"""Run a pipeline's Hydra app in this process, exactly as its `__main__` does (through
`forecast.cli.run_app`), and return its exit code and stderr: the bad-input catalogue runs dozens
of cases, and a subprocess per case would spend most of its time importing torch."""

from __future__ import annotations

import io
import logging
import os
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class AppResult:
    code: int
    stderr: str
    stdout: str = ""  # the log (Hydra logs to stdout)

    @property
    def last_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def run_inprocess(script: str, args: list[str], cwd: Path, monkeypatch, capsys) -> AppResult:
    """`python pipelines/<script> <args>` from `cwd`, in process; SystemExit becomes the code."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [str(ROOT / "pipelines" / script), *args])
    # run_app sets these for Hydra; monkeypatch restores the environment afterwards.
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("_FORECAST_SET_HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("FORECAST_DEBUG", raising=False)
    capsys.readouterr()
    code = 0
    environ = dict(os.environ)  # what the run sets (MLflow's HTTP limits, PL_GLOBAL_SEED) ends with it
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # Hydra attaches its own to the root logger
    try:
        # As `python pipelines/<script>`: its `__main__` block calls run_app(main).
        runpy.run_path(str(ROOT / "pipelines" / script), run_name="__main__")
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        os.environ.clear()
        os.environ.update(environ)
        root.handlers[:] = handlers
        root.setLevel(level)
    captured = capsys.readouterr()
    return AppResult(code, captured.err, captured.out)


def run_isolated(
    script: str, args: list[str], cwd: Path, monkeypatch, capsys, default_store: bool = False
) -> AppResult:
    """`run_inprocess`, and afterwards nothing left that the run's own process would have taken
    with it: the store it pointed MLflow at and the training's matmul precision (the environment
    and the root logger `run_inprocess` puts back itself). `default_store`: no
    MLFLOW_TRACKING_URI, so the pipeline's own default (`cwd/mlflow.db`) applies."""
    import mlflow
    import torch

    if default_store:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        mlflow.set_tracking_uri(None)
    precision = torch.get_float32_matmul_precision()
    try:
        return run_inprocess(script, args, cwd, monkeypatch, capsys)
    finally:
        mlflow.set_tracking_uri(None)
        torch.set_float32_matmul_precision(precision)


class Capture:
    """What capsys gives `run_inprocess`, for a module-scoped fixture (capsys is per test)."""

    def __init__(self) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()

    def readouterr(self) -> SimpleNamespace:
        taken = SimpleNamespace(out=self.out.getvalue(), err=self.err.getvalue())
        for stream in (self.out, self.err):
            stream.seek(0)
            stream.truncate()
        return taken
