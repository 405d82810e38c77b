"""Run a pipeline's Hydra app in this process, exactly as its `__main__` does (through
`forecast.cli.run_app`), and return its exit code and stderr: the bad-input catalogue runs dozens
of cases, and a subprocess per case would spend most of its time importing torch."""

from __future__ import annotations

import logging
import os
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path

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
