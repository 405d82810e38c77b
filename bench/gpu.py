"""GPU figures (issue 22) on one CUDA device: B3's training (bench/throughput.py's data and model)
at segment_len 1 and 24, in float32 and bf16-mixed, and the batch forecast of 100,000 series with
the net on the GPU.

    bash bench/gpu.sh                 # on a GPU machine: the wheels, the gpu tests, then this script
    python bench/gpu.py               # the figures alone
    python bench/gpu.py --quick       # 2,000 series to forecast, 20 steps: a smoke run
    python bench/gpu.py --check       # exits 3 with one line when there is no CUDA device

One JSON object per line (logs go to stderr): `stage` (`train` | `forecast`), `model`
(`lstm-seg1` | `lstm-seg24`), `members` (1: one model, one seed), `precision`, `series`,
`wall_s`, `peak_gpu_mb` (torch's peak allocation during the stage), `peak_rss_mb` (the process's
peak so far), `device`, `torch`, `cuda`, `cudnn`, and per stage:

- `train` (1,000 series, batch 256, `precision` `32-true` | `bf16-mixed`): `windows_per_s` over
  `steps` after `warmup`, the device synchronized at both ends; `wall_s`: the whole
  `Trainer.fit`; `matmul_precision` (`high`, as `forecast.training.fit` sets: TF32 matmuls) and
  `cudnn_tf32` (TF32 in cuDNN's LSTM).
- `forecast` (the float32 model): `forecast.engines.local.forecast_file`, what
  `pipelines/batch_forecast.py` runs once the model is loaded (read Parquet, validate, scale,
  forecast, write Parquet), with the net moved to the GPU, in this warm process: `wall_s` and
  `series_per_s` are that call's. `net_s` and `net_series_per_s`: the network alone on as many
  windows (`Forecaster.predict_scaled`, `net_batch` series per forward pass: the engine's
  4,096, capped by `forecast.inference.max_batch`). `vs_cpu_max_abs` and `vs_cpu_rel`: the
  largest difference from the same model's CPU forecast of its 1,000 training series, absolute
  and over the mean absolute forecast (TF32 as PyTorch leaves it).

The batch forecast has no device option (`conf/batch_forecast.yaml`): a loaded model runs where
its net is, on the CPU. `--device cpu` runs this script's own code on the CPU (the tests do):
those are not GPU figures.
"""

from __future__ import annotations

import argparse
import json
import resource
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
    _datamodule,
    label,
    steps_trainer,
    write_series,
)

NO_CUDA = 3  # the exit code without a CUDA device
BATCH_SIZE = 4096  # series per forward pass: conf/batch_forecast.yaml's batch_size, forecast_file's default


def cuda_or_exit() -> None:
    """Exit with one line on stderr (code 3) unless torch sees a CUDA device."""
    try:
        import torch
    except ImportError:
        print(f"bench/gpu.py: no CUDA device: no torch in {sys.executable} (set PYTHON)", file=sys.stderr)
        raise SystemExit(NO_CUDA) from None
    if not torch.cuda.is_available():
        built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        print(
            f"bench/gpu.py: no CUDA device: torch {torch.__version__} ({built}) sees none; "
            "run it on a GPU machine (bench/README.md, GPU)",
            file=sys.stderr,
        )
        raise SystemExit(NO_CUDA)


def machine(device: str) -> dict:
    """What ran the line: the device and the library versions."""
    import torch

    gpu = device == "cuda"
    return {
        "device": torch.cuda.get_device_name() if gpu else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if gpu else None,
    }


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class Peak:
    """torch's peak GPU allocation over a `with` block, in MB (None on the CPU)."""

    def __init__(self, device: str):
        self.device, self.mb = device, None

    def __enter__(self) -> Peak:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            self.mb = round(torch.cuda.max_memory_allocated() / 2**20, 1)


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def train(args: argparse.Namespace, path: Path, segment_len: int, precision: str):
    """One training run of B3's model; its line, and the trained module with its data."""
    import lightning as L
    import torch

    from forecast.models import ForecastModule

    first, last = args.warmup, args.warmup + args.steps
    stamps: dict[int, float] = {}

    class Timer(L.Callback):
        """Stamps the ends of step `first` and of the last step, the device synchronized."""

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step in (first, last):
                sync(args.device)
                stamps[trainer.global_step] = time.perf_counter()

    torch.manual_seed(SEED)
    dm = _datamodule(path)
    module = ForecastModule(
        input_size=INPUT, horizon=HORIZON, hidden_size=HIDDEN, num_layers=LAYERS, segment_len=segment_len
    )
    trainer = steps_trainer(last, [Timer()], "gpu" if args.device == "cuda" else "cpu", precision)
    started = time.perf_counter()
    with Peak(args.device) as peak:
        trainer.fit(module, datamodule=dm)
    record = {
        "stage": "train",
        "model": label(segment_len),
        "members": 1,
        "precision": precision,
        "series": len(dm.ids),
        "wall_s": round(time.perf_counter() - started, 2),
        "windows_per_s": round(BATCH * (last - first) / (stamps[last] - stamps[first]), 1),
        "steps": args.steps,
        "warmup": args.warmup,
        "batch": BATCH,
        "peak_gpu_mb": peak.mb,
        "peak_rss_mb": peak_rss_mb(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        **machine(args.device),
    }
    return record, module, dm


def forecast(args: argparse.Namespace, module, dm, segment_len: int, source: Path, n_series: int, work: Path):
    """The streamed batch forecast of `source` with the net on the device; its line."""
    import numpy as np
    import pandas as pd

    from forecast.engines.local import forecast_file
    from forecast.inference import max_batch
    from forecast.training import build_forecaster

    forecaster = build_forecaster(module, dm)  # the net on the CPU, as a loaded model's is
    train_table = dm.history()
    on_cpu = forecaster.predict(train_table)
    forecaster.net.to(args.device)
    on_gpu = forecaster.predict(train_table)  # also the warm-up: cuDNN's handles and plans
    diff = np.abs(on_gpu["y_hat"].to_numpy() - on_cpu["y_hat"].to_numpy())
    output = work / f"forecast_{segment_len}_{n_series}.parquet"
    sync(args.device)
    started = time.perf_counter()
    with Peak(args.device) as peak:
        summary = forecast_file(forecaster, source, output, batch_size=BATCH_SIZE, progress="none")
    wall = time.perf_counter() - started
    windows = np.random.default_rng(SEED).standard_normal((n_series, INPUT), dtype=np.float32)
    sync(args.device)
    t0 = time.perf_counter()
    forecaster.predict_scaled(windows, BATCH_SIZE, blend=False)  # back in host memory: the device is done
    net_s = time.perf_counter() - t0
    return {
        "stage": "forecast",
        "model": label(segment_len),
        "members": 1,
        "precision": "32-true",
        "series": summary.series,
        "wall_s": round(wall, 2),
        "series_per_s": round(summary.series / wall, 1),
        "net_s": round(net_s, 3),
        "net_series_per_s": round(n_series / net_s, 1),
        "net_batch": min(BATCH_SIZE, max_batch(forecaster.net, INPUT)),
        "rows_in": summary.rows,
        "rows_out": len(pd.read_parquet(output, columns=["y_hat"])),
        "vs_cpu_max_abs": float(diff.max()),
        "vs_cpu_rel": float(diff.max() / np.abs(on_cpu["y_hat"].to_numpy()).mean()),
        "peak_gpu_mb": peak.mb,
        "peak_rss_mb": peak_rss_mb(),
        **machine(args.device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 3 with one line unless CUDA is there")
    parser.add_argument("--quick", action="store_true", help="2,000 series to forecast, 20 steps")
    parser.add_argument("--segment-lens", default="1,24", help="models (default 1,24)")
    parser.add_argument("--precisions", default="32-true,bf16-mixed", help="training precisions")
    parser.add_argument("--steps", type=int, default=None, help="measured training steps (default 200)")
    parser.add_argument("--warmup", type=int, default=None, help="steps before them (default 20)")
    parser.add_argument("--train-series", type=int, default=1000, help="series to train on (B3: 1,000)")
    parser.add_argument(
        "--forecast-series", type=int, default=None, help="series to forecast (default 100,000)"
    )
    parser.add_argument("--length", type=int, default=1000, help="series length (B3: 1,000)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the data here (default: a temporary folder)"
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda":
        cuda_or_exit()
    if args.check:
        return
    import logging
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(args)


def run(args: argparse.Namespace) -> None:
    import torch

    torch.set_float32_matmul_precision("high")  # as forecast.training.fit
    args.steps = args.steps or (20 if args.quick else 200)
    args.warmup = args.warmup if args.warmup is not None else (5 if args.quick else 20)
    n_forecast = args.forecast_series or (2000 if args.quick else 100_000)
    with tempfile.TemporaryDirectory(prefix="forecast-gpu-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        files = {}
        for n in (args.train_series, n_forecast):
            files[n] = work / f"series_{n}_{args.length}.parquet"
            if not files[n].exists():
                write_series(files[n], n, args.length)
        trained = {}
        for seg in [int(s) for s in args.segment_lens.split(",")]:
            for precision in args.precisions.split(","):
                record, module, dm = train(args, files[args.train_series], seg, precision)
                emit(record)
                if precision == "32-true":
                    trained[seg] = module, dm
        for seg, (module, dm) in trained.items():
            emit(forecast(args, module, dm, seg, files[n_forecast], n_forecast, work))


if __name__ == "__main__":
    main()
