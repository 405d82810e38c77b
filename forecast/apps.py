"""The installed commands: `forecast-train`, `forecast-batch`, ... and `python -m forecast COMMAND`.

Each runs its pipeline module (pipelines/, installed as forecast.pipelines) as `__main__`, exactly
as `python pipelines/<name>.py` does: the pipeline's own `run_app(main)` turns user errors into
one line and an exit code, Hydra finds the configs beside it, and Lightning's DDP starts its
worker processes with `python -m forecast.pipelines.<name>`.
"""

from __future__ import annotations

import runpy
import sys

# command -> its module in pipelines/
COMMANDS = {
    "train": "train",
    "batch": "batch_forecast",
    "backtest": "backtest",
    "promote": "promote",
}

USAGE = """usage: python -m forecast COMMAND [Hydra overrides ...]

commands (also installed as the console scripts forecast-COMMAND):
  train      train a model, track it in MLflow, register it with register=true
  batch      forecast every series of a table with a registered model
  backtest   rolling-origin backtest of a registered model
  promote    promotion gate: the candidate replaces the champion only if it scores better

`python -m forecast COMMAND --help` lists the config groups and options of COMMAND."""


def run(command: str, overrides: list[str]) -> None:
    """Run the pipeline of `command` with `overrides` as its command line."""
    sys.argv = [sys.argv[0], *overrides]
    runpy.run_module(f"forecast.pipelines.{COMMANDS[command]}", run_name="__main__", alter_sys=True)


def train() -> None:
    """Console script `forecast-train`."""
    run("train", sys.argv[1:])


def batch() -> None:
    """Console script `forecast-batch`."""
    run("batch", sys.argv[1:])


def backtest() -> None:
    """Console script `forecast-backtest`."""
    run("backtest", sys.argv[1:])


def promote() -> None:
    """Console script `forecast-promote`."""
    run("promote", sys.argv[1:])


def main(argv: list[str] | None = None) -> None:
    """`python -m forecast COMMAND [overrides]`: COMMAND picks the pipeline, Hydra reads the rest."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return
    if not args or args[0] not in COMMANDS:
        if args:
            print(f"error: unknown command '{args[0]}' (one of: {', '.join(COMMANDS)})", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    run(args[0], args[1:])
