"""Run a benchmark script in this process, exactly as `python bench/<script>` from the repository
root runs it, and return its JSON result lines: a subprocess per script would spend most of its
time importing torch and Lightning again.

The accuracy scripts quiet Lightning's and forecast's loggers, seed torch, NumPy and Lightning
(`PL_GLOBAL_SEED` in the environment), set torch's matmul precision and Hydra's config singleton,
and put `bench/` on `sys.path`: all of it is put back afterwards, so nothing leaks into the tests
that run later in the same process. A script's own child processes (bench/throughput.py runs
each stage in one) still run: their output is captured at the file descriptors (`capfd`).
"""

from __future__ import annotations

import json
import logging
import os
import random
import runpy
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


class _Globals:
    """What a benchmark script may change in its process, as it was before it ran."""

    def __init__(self) -> None:
        import lightning  # noqa: F401  (its loggers exist, at the levels it gives them, from here on)
        from hydra.core.hydra_config import HydraConfig

        logging.getLogger("forecast")  # a placeholder until now, perhaps: a logger with a level
        self.environ = dict(os.environ)
        self.levels = self._levels()
        self.hydra_cfg = HydraConfig.instance().cfg
        self.threads = torch.get_num_threads()
        self.precision = torch.get_float32_matmul_precision()
        self.rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())

    @staticmethod
    def _levels() -> dict[logging.Logger, int]:
        loggers = [logging.root, *logging.root.manager.loggerDict.values()]
        return {lg: lg.level for lg in loggers if isinstance(lg, logging.Logger)}

    def restore(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        for name in set(os.environ) - set(self.environ):
            del os.environ[name]
        os.environ.update(self.environ)
        for lg in self._levels():  # loggers made while the script ran: their parents decide
            lg.setLevel(self.levels.get(lg, logging.NOTSET))
        HydraConfig.instance().cfg = self.hydra_cfg
        torch.set_num_threads(self.threads)
        torch.set_float32_matmul_precision(self.precision)
        random.setstate(self.rng[0])
        np.random.set_state(self.rng[1])
        torch.set_rng_state(self.rng[2])


def run_bench_inprocess(script: str, args: list[str], monkeypatch, capfd) -> list[dict]:
    """`python bench/<script> <args>` from the repository root, in process; its JSON lines."""
    path = ROOT / "bench" / script
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", [str(path), *args])
    monkeypatch.syspath_prepend(str(path.parent))  # sys.path as it was, afterwards
    saved = _Globals()
    capfd.readouterr()
    code = 0
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        saved.restore()
    captured = capfd.readouterr()
    assert code == 0, f"{script} exited with {code}:\n{captured.out[-3000:]}\n{captured.err[-5000:]}"
    lines = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    assert lines, f"{captured.out[-3000:]}\n{captured.err[-5000:]}"
    return lines
