"""Training data set-up at scale: time and memory of `SeriesDataModule.setup()` on N series.

    python bench/setup_scale.py                      # N = 100,000 series of length 1,000 (100M rows)
    python bench/setup_scale.py --sizes 1000,10000 --workdir /tmp/setup

B3 (BENCHMARKS.md) times training on 1,000 series; this is the step before training that grows
with the data: read the Parquet table, validate it, build the windows and the scaler. Each size
runs in a fresh process and prints one JSON line: `series`, `rows`, `setup_s`, `peak_rss_mb`
(the process's peak, VmHWM), `held_mb` (resident memory after set-up minus before, i.e. what
the data module keeps), `raw_mb` (the target values as float32) and `held_vs_raw`. The data is
the seeded synthetic set of bench/throughput.py, sorted by id.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import write_series  # noqa: E402


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(path: Path, input_size: int, horizon: int) -> None:
    from forecast.data import SeriesDataModule

    before = _status_mb("VmRSS")
    started = time.perf_counter()
    dm = SeriesDataModule(path=str(path), freq="h", input_size=input_size, horizon=horizon, season_length=24)
    dm.setup()
    setup_s = time.perf_counter() - started
    held = _status_mb("VmRSS") - before
    raw = dm.arrays.values.nbytes / 2**20
    record = {
        "stage": "setup",
        "series": len(dm.ids),
        "rows": int(dm.arrays.values.size),
        "setup_s": round(setup_s, 2),
        "peak_rss_mb": round(_status_mb("VmHWM"), 1),
        "held_mb": round(held, 1),
        "raw_mb": round(raw, 1),
        "held_vs_raw": round(held / raw, 2),
        "load_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(record), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000", help="comma-separated series counts")
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--input-size", type=int, default=168)
    parser.add_argument("--horizon", type=int, default=48)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated data here")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.input_size, args.horizon)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for size in (int(s) for s in args.sizes.split(",")):
            path = work / f"series_{size}_{args.length}.parquet"
            if not path.exists():
                write_series(path, size, args.length)
            cmd = [sys.executable, __file__, "--worker", str(path)]
            cmd += ["--input-size", str(args.input_size), "--horizon", str(args.horizon)]
            subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
