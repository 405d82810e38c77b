"""Training data at scale: set-up time, memory and training throughput, in memory and mapped.

    python bench/setup_scale.py                                # 10k, 100k, 1M series x 1,000 steps
    python bench/setup_scale.py --sizes 1000,10000 --workdir /tmp/scale --train-steps 50

For each size N (series of `--length` steps, the seeded synthetic data of bench/throughput.py
sorted by id, written once into `--workdir`) it runs, each in a fresh process:

- `read`: the Parquet table decoded batch by batch (pyarrow, the three columns), nothing kept:
  the least any reader of the file pays (issue 22's yardstick: a mapped set-up within 2x of it),
  `read_s` with the ids as strings (pyarrow's default), `read_dict_s` dictionary-encoded (as
  the mapped store reads text ids);
- `mapped`, cold: `SeriesDataModule(store="mapped").setup()` with an empty cache (read,
  validate, write the store, statistics and window counts in one pass), then `--train-steps`
  training steps of the B3 model (bench/throughput.py's sizes) timed after a warm-up;
- `mapped-reuse`: the same set-up again, reusing the store;
- `memory` (N up to `--memory-max`): the whole table in memory, as before, then the same
  training steps: the throughput the mapped path is held to (within 10%).

Each prints one JSON line: `setup_s` (or `read_s`), `setup_peak_rss_mb` (VmHWM when set-up ends),
`held_mb` (VmRSS after minus before set-up), `rss_anon_mb` (anonymous memory: what is not the
mapped file's pages, which the kernel may drop), `raw_mb` (the values as float32),
`windows_per_s` and `peak_rss_mb` (the whole process, training included), and after training
`end_rss_anon_mb` / `end_rss_file_mb` (anonymous memory / mapped file pages, which count in RSS
but are page cache the kernel reclaims).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import (  # noqa: E402
    BATCH,
    HIDDEN,
    HORIZON,
    INPUT,
    LAYERS,
    SEED,
    THREADS,
    step_timer,
    steps_trainer,
    write_series,
)


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return float("nan")


def _emit(record: dict) -> None:
    record["load_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(record), flush=True)


def worker_read(path: Path) -> None:
    """Decode every row of the three columns once, keeping nothing."""
    import pyarrow.parquet as pq

    seconds, rows = {}, 0
    # Batch by batch, without pre-buffering (which keeps every row group's raw data until the
    # reader closes): ids as plain strings (what a reader gets by default: the yardstick), and
    # dictionary-encoded, as the mapped store reads them (forecast.data.store._text_ids).
    for label, dictionary in (("read_s", None), ("read_dict_s", ["unique_id"])):
        started = time.perf_counter()
        rows = 0
        parquet = pq.ParquetFile(path, pre_buffer=False, read_dictionary=dictionary)
        for batch in parquet.iter_batches(batch_size=1 << 20, columns=["unique_id", "ds", "y"]):
            rows += batch.num_rows
        seconds[label] = round(time.perf_counter() - started, 2)
    _emit({"stage": "read", "rows": rows, **seconds, "peak_rss_mb": round(_status_mb("VmHWM"), 1)})


def worker_setup(path: Path, store: str, cache: Path, train_steps: int, warmup: int) -> None:
    """Set the data module up (timed, memory read), then time `train_steps` training steps."""
    import torch

    from forecast.data import SeriesDataModule

    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    before = _status_mb("VmRSS")
    started = time.perf_counter()
    dm = SeriesDataModule(
        path=str(path),
        store="mapped" if store.startswith("mapped") else "memory",
        cache_dir=str(cache),
        freq="h",
        input_size=INPUT,
        horizon=HORIZON,
        season_length=24,
        batch_size=BATCH,
    )
    dm.setup()
    setup_s = time.perf_counter() - started
    raw = dm.arrays.values.size * 4 / 2**20
    record = {
        "stage": store,
        "series": len(dm.ids),
        "rows": int(dm.arrays.values.size),
        "setup_s": round(setup_s, 2),
        "setup_peak_rss_mb": round(_status_mb("VmHWM"), 1),
        "held_mb": round(_status_mb("VmRSS") - before, 1),
        "rss_anon_mb": round(_status_mb("RssAnon"), 1),
        "raw_mb": round(raw, 1),
        "train_windows": len(dm.datasets["train"]),
    }
    if train_steps:
        record.update(_train(dm, train_steps, warmup))
    record["peak_rss_mb"] = round(_status_mb("VmHWM"), 1)
    # After training: anonymous memory, and the mapped file's pages in the resident set (clean
    # page cache the kernel drops under pressure; fault-around maps 16 pages per fault).
    record["end_rss_anon_mb"] = round(_status_mb("RssAnon"), 1)
    record["end_rss_file_mb"] = round(_status_mb("RssFile"), 1)
    _emit(record)


def _train(dm, steps: int, warmup: int) -> dict:
    """Windows/s of the B3 model (segment_len 1) over `steps` steps after `warmup`."""
    import lightning as L

    from forecast.models import ForecastModule

    module = ForecastModule(input_size=INPUT, horizon=HORIZON, hidden_size=HIDDEN, num_layers=LAYERS)
    timer = step_timer(L.Callback, warmup)
    trainer = steps_trainer(warmup + steps, [timer])
    trainer.fit(module, datamodule=dm)
    return {"windows_per_s": round(timer.rate(BATCH), 1), "train_steps": steps, "threads": THREADS}


def _run(args: list[str]) -> None:
    subprocess.run([sys.executable, __file__, *args], check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated series counts")
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--stores", default="memory,mapped", help="which set-ups to measure")
    parser.add_argument("--memory-max", type=int, default=100_000, help="largest N read whole in memory")
    parser.add_argument("--train-steps", type=int, default=100, help="timed training steps (0: none)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated data here")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)  # stage, data, cache
    args = parser.parse_args(argv)
    if args.worker:
        stage, path, cache = args.worker
        if stage == "read":
            worker_read(Path(path))
        else:
            worker_setup(Path(path), stage, Path(cache), args.train_steps, args.warmup)
        return
    stores = args.stores.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for size in (int(s) for s in args.sizes.split(",")):
            path = work / f"series_{size}_{args.length}.parquet"
            if not path.exists():
                write_series(path, size, args.length)
            cache = work / f"cache_{size}"
            shutil.rmtree(cache, ignore_errors=True)  # the first mapped set-up is a cold one
            steps = ["--train-steps", str(args.train_steps), "--warmup", str(args.warmup)]
            _run(["--worker", "read", str(path), str(cache)])
            if "mapped" in stores:
                _run(["--worker", "mapped", str(path), str(cache), *steps])
                _run(["--worker", "mapped-reuse", str(path), str(cache), "--train-steps", "0"])
            if "memory" in stores and size <= args.memory_max:
                _run(["--worker", "memory", str(path), str(cache), *steps])
            shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
