"""B3 throughput (BENCHMARKS.md): data pipeline, training and batch-forecast speed and memory.

    python bench/throughput.py                      # N = 1,000 and 100,000 series of length 1,000
    python bench/throughput.py --quick              # small sizes, few steps (< 60 s)
    python bench/throughput.py --compare neuralforecast
    python bench/throughput.py --against 66ddac5 --sizes 1000 --segment-lens 24,1 --steps 100 --warmup 10

Prints one JSON object per line: `stage` (data | train | forecast), `model`, `members` (1: every
model here is one model, one seed), `series`, `wall_s`, `peak_rss_mb` and the stage's rate
(`batches_per_s` | `windows_per_s` | `series_per_s`). Speed and memory only: no accuracy figure,
so no validation (`val_*`) figure either. With --compare, neuralforecast's LSTM runs on the same
data and settings in the same run and the last line carries `ratio: true`, `train_speedup` and
`forecast_speedup`.

--against REF: the training stage only, of the same model, for the code at commit REF (its
`forecast/` package, exported by `git archive`) and for this working tree, alternately
(REF, this, REF, this, ... `--rounds` times) in fresh processes that run this script's own
worker, so both sides get the same data, settings, process order and machine state; the last
line carries `ratio: true` and each model's `speedup` (this tree's median windows/s over REF's).

Every stage runs in a fresh process, so its peak memory is its own: the data and training
stages as workers of this script, the forecast stage as the real command line
(`pipelines/batch_forecast.py`) on a model registered in a temporary MLflow SQLite store.
neuralforecast is optional: it runs under $NEURALFORECAST_PYTHON, else this interpreter when it
can import it, else /tmp/nfvenv/bin/python; otherwise the comparison is reported as skipped.
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

REPO = Path(__file__).resolve().parents[1]
INPUT, HORIZON, BATCH, HIDDEN, LAYERS = 168, 48, 256, 128, 2
# Two threads: the protocol's (BENCHMARKS.md). The test suite sets 1: its workers share the cores.
THREADS = int(os.environ.get("FORECAST_BENCH_THREADS", "2"))
SEED = 0


def emit(record: dict) -> None:
    """One result line; `load_1m` says how busy the (shared) machine was when it was taken."""
    print(json.dumps({**record, "load_1m": round(os.getloadavg()[0], 2)}), flush=True)


def peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# -- data --------------------------------------------------------------------------------------
def write_series(path: Path, n_series: int, length: int, seed: int = SEED, per_chunk: int = 5000) -> Path:
    """N seeded synthetic series (forecast.data.synthetic) as a long Parquet table sorted by id,
    generated and written a chunk of series at a time."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from forecast.data.synthetic import synthetic_values

    ds = pd.date_range("2024-01-01", periods=length, freq="h").to_numpy()
    width = len(str(n_series - 1))  # zero-padded ids: sorted as strings = sorted as numbers
    with pq.ParquetWriter(
        path, pa.schema([("unique_id", pa.string()), ("ds", pa.timestamp("ns")), ("y", pa.float32())])
    ) as writer:
        for k, first in enumerate(range(0, n_series, per_chunk)):
            n = min(per_chunk, n_series - first)
            values = synthetic_values(n, length, seed=seed + k)
            ids = np.array([f"s{i:0{width}d}" for i in range(first, first + n)], dtype=object)
            table = pa.table(
                {"unique_id": np.repeat(ids, length), "ds": np.tile(ds, n), "y": values.reshape(-1)}
            )
            writer.write_table(table.cast(writer.schema), row_group_size=1_000_000)
    return path


def _datamodule(path: Path):
    import pandas as pd

    from forecast.data import SeriesDataModule

    dm = SeriesDataModule(
        frame=pd.read_parquet(path),
        freq="h",
        input_size=INPUT,
        horizon=HORIZON,
        season_length=24,
        batch_size=BATCH,
    )
    dm.setup()
    return dm


# -- workers (each runs in its own process) ----------------------------------------------------
def worker_data(args: argparse.Namespace) -> None:
    """Batches/s of the real train DataLoader alone, and the data module's memory."""
    import pandas as pd
    import torch

    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    dm = _datamodule(args.data)
    setup_s = time.perf_counter() - started
    arrays = dm.arrays
    raw = arrays.values.size * 4  # the raw values as float32
    # Everything the data module holds once set up: the arrays the windows index (values, offsets,
    # per-series statistics, step numbers, codes), the window starts, the ids and first times.
    served = (
        sum(a.nbytes for a in vars(arrays).values() if a is not None)
        + sum(d.starts.nbytes for d in dm.datasets.values())
        + int(pd.Index(dm.ids).memory_usage(deep=True))
        + int(dm.first_time.memory_usage(deep=True))
    )
    loader = iter(dm.train_dataloader())
    for _ in range(args.warmup):
        next(loader)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        next(loader)
    wall = time.perf_counter() - t0
    emit(
        {
            "stage": "data",
            "model": "-",
            "series": len(arrays.loc),
            "wall_s": round(wall, 3),
            "peak_rss_mb": peak_rss_mb(),
            "batches_per_s": round(args.steps / wall, 1),
            "batch": BATCH,
            "steps": args.steps,
            "setup_s": round(setup_s, 2),
            "datamodule_vs_raw": round(served / raw, 3),
            "train_windows": len(dm.datasets["train"]),
            "rows": int(arrays.values.size),
        }
    )


def worker_train(args: argparse.Namespace) -> None:
    """Training windows/s over `steps` after `warmup`, then register the model for forecasting."""
    import lightning as L
    import mlflow
    import torch

    import forecast
    from forecast.models import ForecastModule

    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    dm = _datamodule(args.data)
    module = ForecastModule(
        input_size=INPUT,
        horizon=HORIZON,
        hidden_size=HIDDEN,
        num_layers=LAYERS,
        segment_len=args.segment_len,
        window_norm=args.window_norm == "true",  # explicit: the Python default changed (issue 19)
    )
    timer = step_timer(L.Callback, args.warmup)
    trainer = steps_trainer(args.warmup + args.steps, [timer])
    started = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    wall = time.perf_counter() - started
    record = {
        "stage": "train",
        "model": label(args.segment_len),
        "members": 1,
        "series": len(dm.ids),
        "wall_s": round(wall, 2),
        "peak_rss_mb": peak_rss_mb(),
        "windows_per_s": round(timer.rate(BATCH), 1),
        "steps": args.steps,
        "warmup": args.warmup,
        "batch": BATCH,
        "threads": torch.get_num_threads(),
        "window_norm": args.window_norm == "true",
        "package": str(Path(forecast.__file__).parent),  # which code ran (--against)
    }
    if args.no_register:  # --against: the older code may lack what registering needs
        emit(record)
        return
    from forecast.tracking import ensure_experiment, log_forecaster, register
    from forecast.training import build_forecaster

    forecaster = build_forecaster(module, dm)
    if args.export_onnx:
        forecaster.export = ("onnx",)
    root = Path(args.store)
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    experiment = ensure_experiment("throughput", root)
    c = dm.columns
    example = dm.history(ids=dm.ids[:2]).groupby(c.id_col).tail(INPUT).astype({c.target_col: "float64"})
    with mlflow.start_run(experiment_id=experiment):
        info = log_forecaster(forecaster, example.reset_index(drop=True))
    name = f"bench-{label(args.segment_len)}"
    register(info.model_uri, name, "champion")
    record["model_uri"] = f"models:/{name}@champion"
    emit(record)


def steps_trainer(max_steps: int, callbacks: list, accelerator: str = "cpu", precision: str | None = None):
    """A Lightning trainer that only trains `max_steps` steps: no validation, logging,
    checkpoints or progress bar (what a throughput figure times)."""
    import lightning as L

    return L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_steps=max_steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        num_sanity_val_steps=0,
    )


def label(segment_len: int) -> str:
    return f"lstm-seg{segment_len}"


def step_timer(callback_base: type, warmup: int):
    """A Lightning callback (of the given Lightning's import name) timing the steps after warm-up.

    It stamps every batch end; `rate(batch)` is windows/s from the end of step `warmup` to the
    last step, whatever the loop's own step bookkeeping (neuralforecast's differs from ours).
    """

    class StepTimer(callback_base):
        def __init__(self):
            self.ends: list[tuple[int, float]] = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.ends.append((trainer.global_step, time.perf_counter()))

        def rate(self, batch: int) -> float:
            after = [(step, t) for step, t in self.ends if step >= warmup]
            (step0, t0), (step1, t1) = after[0], after[-1]
            return batch * (step1 - step0) / (t1 - t0)

    return StepTimer()


def worker_nf_train(args: argparse.Namespace) -> None:
    """neuralforecast's LSTM on the same data and settings; saved for the forecast stage."""
    import logging

    import pandas as pd
    import torch

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    torch.set_num_threads(THREADS)
    import neuralforecast
    from neuralforecast import NeuralForecast
    from neuralforecast.models import LSTM

    # neuralforecast deep-copies its models (and their callbacks) in fit: time the class's steps.
    stamps: list[float] = []
    step = LSTM.training_step

    def timed_step(self, *a, **k):
        stamps.append(time.perf_counter())
        return step(self, *a, **k)

    LSTM.training_step = timed_step
    df = pd.read_parquet(args.data)
    model = LSTM(
        h=HORIZON,
        input_size=INPUT,
        encoder_n_layers=LAYERS,
        encoder_hidden_size=HIDDEN,
        decoder_hidden_size=HIDDEN,
        decoder_layers=2,
        max_steps=args.warmup + args.steps,
        batch_size=32,
        windows_batch_size=BATCH,
        valid_batch_size=1024,
        scaler_type="robust",
        random_seed=SEED,
        val_check_steps=10**6,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    nf = NeuralForecast(models=[model], freq="h")
    started = time.perf_counter()
    nf.fit(df=df)
    wall = time.perf_counter() - started
    nf.save(args.model_dir, overwrite=True)
    emit(
        {
            "stage": "train",
            "model": "neuralforecast-lstm",
            "members": 1,
            "series": int(df["unique_id"].nunique()),
            "wall_s": round(wall, 2),
            "peak_rss_mb": peak_rss_mb(),
            # from the start of the step after warm-up to the start of the last one
            "windows_per_s": round(
                BATCH * (len(stamps) - 1 - args.warmup) / (stamps[-1] - stamps[args.warmup]), 1
            ),
            "steps": args.steps,
            "warmup": args.warmup,
            "batch": BATCH,
            "threads": torch.get_num_threads(),
            "version": neuralforecast.__version__,
        }
    )


def worker_nf_forecast(args: argparse.Namespace) -> None:
    """End to end like ours: load the saved model, read Parquet, forecast, write Parquet."""
    import pandas as pd
    import torch

    torch.set_num_threads(THREADS)
    from neuralforecast import NeuralForecast

    nf = NeuralForecast.load(args.model_dir)
    out = nf.predict(df=pd.read_parquet(args.data))
    out.to_parquet(args.output)


# -- the driver --------------------------------------------------------------------------------
def run_child(
    cmd: list[str], env: dict | None = None, timeout: float | None = None
) -> tuple[str, float, float]:
    """Run a child process; return its stdout, wall seconds and peak RSS (MB, its own)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO)
        deadline = None if timeout is None else started + timeout
        peak = 0.0
        while True:
            peak = max(peak, _hwm_mb(proc.pid))
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline and time.perf_counter() > deadline:
                proc.kill()
                pid, status, _ = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{stderr[-3000:]}")
    return stdout, wall, round(peak, 1)


def _hwm_mb(pid: int) -> float:
    """The child's own peak RSS (VmHWM). getrusage's ru_maxrss would not do: on Linux a child
    starts from its parent's high-water mark, so small children all read as the parent's peak."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def neuralforecast_python() -> tuple[str | None, str]:
    """Which interpreter runs neuralforecast, or None and why not."""
    env = os.environ.get("NEURALFORECAST_PYTHON")
    candidates = [env] if env else [sys.executable, "/tmp/nfvenv/bin/python"]
    for python in candidates:
        if python and Path(python).exists():
            ok = subprocess.run([python, "-c", "import neuralforecast"], capture_output=True).returncode == 0
            if ok:
                return python, ""
    return None, f"neuralforecast not importable by {candidates} (set NEURALFORECAST_PYTHON)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and few steps (< 60 s)")
    parser.add_argument("--sizes", default=None, help="comma-separated series counts (default 1000,100000)")
    parser.add_argument("--length", type=int, default=None, help="series length (default 1000)")
    parser.add_argument("--segment-lens", default=None, help="models to run (default 1,24)")
    parser.add_argument("--runtimes", default=None, help="forecast runtimes (default auto,torch)")
    parser.add_argument("--compare", choices=["neuralforecast"], default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="keep data and models here")
    parser.add_argument("--nf-timeout", type=float, default=1800, help="seconds per neuralforecast run")
    parser.add_argument("--against", metavar="REF", help="A/B the training stage against commit REF")
    parser.add_argument("--rounds", type=int, default=2, help="--against: runs of each side (default 2)")
    parser.add_argument(
        "--window-norm", choices=["true", "false"], default="true", help="RevIN on (the default model's)"
    )
    # internal: the per-stage worker processes
    parser.add_argument(
        "--worker", choices=["data", "train", "nf-train", "nf-forecast"], help=argparse.SUPPRESS
    )
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help="measured training steps (default 200)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps before them (default 20)")
    parser.add_argument("--segment-len", type=int, default=24, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--export-onnx", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--no-register", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import warnings

        warnings.filterwarnings("ignore")
        {
            "data": worker_data,
            "train": worker_train,
            "nf-train": worker_nf_train,
            "nf-forecast": worker_nf_forecast,
        }[args.worker](args)
        return
    if args.against:
        drive_against(args)
        return
    drive(args)


def drive_against(args: argparse.Namespace) -> None:
    """The training stage for the code at `args.against` and for this tree, alternately."""
    import statistics

    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", args.against],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    here = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    size = int((args.sizes or "1000").split(",")[0])
    length = args.length or 1000
    steps, warmup = args.steps or 100, args.warmup if args.warmup is not None else 10
    with tempfile.TemporaryDirectory(prefix="forecast-ab-") as tmp:
        old = Path(tmp) / "ref"
        old.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", sha, "forecast"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        data = write_series(Path(tmp) / f"series_{size}_{length}.parquet", size, length)
        trees = {f"ref@{sha}": old, f"this@{here.stdout.strip() or 'tree'}": REPO}
        me = [sys.executable, str(Path(__file__).resolve()), "--worker", "train", "--no-register"]
        common = ["--data", str(data), "--steps", str(steps), "--warmup", str(warmup)]
        rates: dict[tuple[str, int], list[float]] = {}
        for seg in [int(s) for s in (args.segment_lens or "24,1").split(",")]:
            for round_ in range(args.rounds):
                for name, tree in trees.items():  # the same order every round
                    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(THREADS)}
                    cmd = [*me, *common, "--segment-len", str(seg), "--window-norm", args.window_norm]
                    out, _, _ = run_child(cmd, env)
                    rec = last_json(out)
                    rates.setdefault((name, seg), []).append(rec["windows_per_s"])
                    emit({**rec, "code": name, "round": round_ + 1})
        speedup = {}
        for seg in {s for _, s in rates}:
            ref, this = (statistics.median(rates[(n, seg)]) for n in trees)
            speedup[label(seg)] = round(this / ref, 3)
        emit({"stage": "train", "ratio": True, "against": sha, "speedup": speedup, "members": 1})


def drive(args: argparse.Namespace) -> None:
    import importlib.util

    quick = args.quick
    sizes = [int(s) for s in (args.sizes or ("200,2000" if quick else "1000,100000")).split(",")]
    length = args.length or (400 if quick else 1000)
    seg_lens = [int(s) for s in (args.segment_lens or ("24" if quick else "1,24")).split(",")]
    runtimes = (args.runtimes or ("auto" if quick else "auto,torch")).split(",")
    steps = args.steps or (5 if quick else 200)
    warmup = args.warmup if args.warmup is not None else (2 if quick else 20)
    onnx = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="forecast-b3-"))
    work.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, str(Path(__file__).resolve())]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "OMP_NUM_THREADS": str(THREADS),
    }
    try:
        files = {}
        for n in sizes:
            files[n] = work / f"series_{n}_{length}.parquet"
            if not files[n].exists():
                write_series(files[n], n, length)
        train_file = files[min(sizes)] if quick else files.get(1000, files[min(sizes)])
        common = ["--data", str(train_file), "--steps", str(steps), "--warmup", str(warmup)]

        data, _, _ = run_child([*me, "--worker", "data", *common], env)
        data = last_json(data)
        emit(data)
        results: dict = {"train": {}, "forecast": {}}
        models = {}
        for seg in seg_lens:
            cmd = [*me, "--worker", "train", *common, "--segment-len", str(seg), "--store", str(work)]
            out, _, _ = run_child(cmd + (["--export-onnx"] if onnx else []), env)
            rec = last_json(out)
            models[seg] = rec.pop("model_uri")
            rec["data_headroom"] = round(data["batches_per_s"] / (rec["windows_per_s"] / BATCH), 1)
            results["train"][rec["model"]] = rec["windows_per_s"]
            emit(rec)
        for seg, uri in models.items():
            for n in sizes:
                for runtime in runtimes:
                    output = work / f"forecast_{seg}_{n}_{runtime}.parquet"
                    cmd = [
                        sys.executable,
                        str(REPO / "pipelines" / "batch_forecast.py"),
                        f"model_uri={uri}",
                        f"input={files[n]}",
                        f"output={output}",
                        f"runtime={runtime}",
                        "progress=none",
                        f"hydra.run.dir={work / 'hydra'}",
                    ]
                    _, wall, rss = run_child(cmd, env)
                    rec = {
                        "stage": "forecast",
                        "model": label(seg),
                        "members": 1,
                        "series": n,
                        "wall_s": round(wall, 2),
                        "peak_rss_mb": rss,
                        "series_per_s": round(n / wall, 1),
                        "runtime": runtime,
                        "length": length,
                        "rows_out": _rows(output),
                    }
                    results["forecast"][(label(seg), n, runtime)] = rec["series_per_s"]
                    emit(rec)
        if args.compare:
            compare(args, me, env, work, files, sizes, train_file, common, results)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def compare(args, me, env, work, files, sizes, train_file, common, results) -> None:
    python, why = neuralforecast_python()
    if python is None:
        emit({"stage": "compare", "model": "neuralforecast-lstm", "skipped": why})
        return
    nf_env = {**env, "PYTHONPATH": str(REPO / "bench")}
    nf_me = [python, str(Path(__file__).resolve())]
    model_dir = work / "nf-model"
    out, _, _ = run_child(
        [*nf_me, "--worker", "nf-train", *common, "--model-dir", str(model_dir)],
        nf_env,
        timeout=args.nf_timeout,
    )
    rec = last_json(out)
    emit(rec)
    nf_train = rec["windows_per_s"]
    nf_forecast = {}
    for n in sizes:
        output = work / f"nf_forecast_{n}.parquet"
        try:
            _, wall, rss = run_child(
                [
                    *nf_me,
                    "--worker",
                    "nf-forecast",
                    "--model-dir",
                    str(model_dir),
                    "--data",
                    str(files[n]),
                    "--output",
                    str(output),
                ],
                nf_env,
                timeout=args.nf_timeout,
            )
        except RuntimeError as err:
            emit({"stage": "forecast", "model": "neuralforecast-lstm", "series": n, "error": str(err)[-500:]})
            continue
        nf_forecast[n] = round(n / wall, 1)
        emit(
            {
                "stage": "forecast",
                "model": "neuralforecast-lstm",
                "members": 1,
                "series": n,
                "wall_s": round(wall, 2),
                "peak_rss_mb": rss,
                "series_per_s": nf_forecast[n],
                "rows_out": _rows(output),
            }
        )
    emit(
        {
            "ratio": True,
            "train_speedup": {m: round(v / nf_train, 2) for m, v in results["train"].items()},
            "forecast_speedup": {
                f"{m}/{n}/{rt}": round(v / nf_forecast[n], 2)
                for (m, n, rt), v in results["forecast"].items()
                if n in nf_forecast
            },
        }
    )


if __name__ == "__main__":
    main()
