"""Recurrent cells' speed: nn.LSTM, nn.GRU, PeepholeLSTM and SLSTM (forecast.models.cells).

    python bench/cells.py                    # segment_len 24 and 1, ~5 s per figure
    python bench/cells.py --quick            # a smoke run (< 20 s): no warm-up, one step per figure
    python bench/cells.py --cells lstm slstm --segment-lens 24 --seconds 10

The new cells cannot use the fused oneDNN LSTM kernel; the issue's target is within 2x of
nn.LSTM's training and forecast speed at segment_len 24. Each cell runs in a small stand-in for
the forecaster on random data (batch 256 windows, input 168, horizon 48, hidden 128, 2 layers):
the (value, observed flag) steps, a Linear + ReLU segment embedding (segment_len x 2 -> hidden;
at segment_len 1 the 2 features go straight into the cell, as in the real net), the cell, and a
Linear head from the last layer's final hidden state to the horizon. `train` is one AdamW step
(forward, L1 loss, backward, update) per batch of windows; `forecast` is forward only under
inference_mode over `--series` series in batches of `--forecast-batch`.

Prints the CPU model (lscpu), torch's thread count and the 1-minute load (the machine may be
shared: compare figures of one run, taken at low load), then a table: cell, segment_len, train
windows/s, forecast series/s, and each cell's time relative to nn.LSTM at the same segment_len
(`x lstm`: 2.0 = twice nn.LSTM's time).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from collections.abc import Callable

import torch
from torch import nn

from forecast.models.cells import SLSTM, PeepholeLSTM

INPUT, HORIZON, BATCH, HIDDEN, LAYERS, THREADS = 168, 48, 256, 128, 2, 2
CELLS: dict[str, type[nn.Module]] = {"lstm": nn.LSTM, "gru": nn.GRU, "peephole": PeepholeLSTM, "slstm": SLSTM}


class StandIn(nn.Module):
    """The forecaster's compute path around the cell, without its options."""

    def __init__(self, cell: str, segment_len: int) -> None:
        super().__init__()
        if INPUT % segment_len:
            raise ValueError(f"segment_len must divide the input size {INPUT}")
        self.segment_len = segment_len
        self.embed = nn.Sequential(nn.Linear(2 * segment_len, HIDDEN), nn.ReLU()) if segment_len > 1 else None
        in_size = HIDDEN if segment_len > 1 else 2
        self.rnn = CELLS[cell](in_size, HIDDEN, num_layers=LAYERS, batch_first=True)
        self.head = nn.Linear(HIDDEN, HORIZON)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = torch.stack([x, torch.ones_like(x)], dim=-1)  # (B, L, 2): value, observed flag
        steps = steps.reshape(x.shape[0], INPUT // self.segment_len, -1)  # (B, N, seg * 2)
        if self.embed is not None:
            steps = self.embed(steps)  # (B, N, hidden)
        _, state = self.rnn(steps)
        h_n = state[0] if isinstance(state, tuple) else state  # (layers, B, hidden)
        return self.head(h_n[-1])  # (B, H)


def rate(fn: Callable[[], None], items: int, warmup: int, seconds: float) -> float:
    """Items per second of `fn` (one call = `items`), after `warmup` calls, over at least one call
    and `seconds`."""
    for _ in range(warmup):
        fn()
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return items * calls / (time.perf_counter() - start)


def measure(cell: str, segment_len: int, args: argparse.Namespace) -> tuple[float, float]:
    """(train windows/s, forecast series/s) of one cell at one segment_len."""
    torch.manual_seed(0)
    net = StandIn(cell, segment_len)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x, y = torch.randn(BATCH, INPUT), torch.randn(BATCH, HORIZON)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.l1_loss(net(x), y).backward()
        optimizer.step()

    net.train()
    train = rate(train_step, BATCH, args.warmup, args.seconds)
    series = torch.randn(args.series, INPUT)
    net.eval()

    def forecast() -> None:
        with torch.inference_mode():
            for i in range(0, args.series, args.forecast_batch):
                net(series[i : i + args.forecast_batch])

    return train, rate(forecast, args.series, min(args.warmup, 1), args.seconds)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "?"
    lines = [line for line in out.splitlines() if line.startswith("Model name")]
    return lines[0] if lines else "?"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run (< 20 s): few steps, small forecast"
    )
    parser.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS))
    parser.add_argument("--segment-lens", type=int, nargs="+", default=[24, 1])
    parser.add_argument("--seconds", type=float, default=None, help="timed seconds per figure (default 5)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed training steps first (default 3; --quick: 0)"
    )
    parser.add_argument("--series", type=int, default=None, help="series to forecast (default 4096)")
    parser.add_argument("--forecast-batch", type=int, default=1024, help="series per forecast batch")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch threads (default 2)")
    args = parser.parse_args()
    args.seconds = args.seconds if args.seconds is not None else (0.2 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 3)
    args.series = args.series or (256 if args.quick else 4096)
    torch.set_num_threads(args.threads)

    print(cpu_model())
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, load_1m {os.getloadavg()[0]:.2f}; "
        f"batch {BATCH}, input {INPUT}, horizon {HORIZON}, hidden {HIDDEN}, layers {LAYERS}, "
        f"{args.seconds:g} s per figure"
    )
    header = f"{'cell':<10}{'seg_len':>8}{'train win/s':>14}{'forecast ser/s':>16}{'train x lstm':>14}"
    header += f"{'fcst x lstm':>13}"
    print(header, flush=True)
    for seg in args.segment_lens:
        lstm: tuple[float, float] | None = None
        for cell in ["lstm", *[c for c in args.cells if c != "lstm"]]:
            train, forecast = measure(cell, seg, args)
            if cell == "lstm":
                lstm = (train, forecast)
                if "lstm" not in args.cells:
                    continue  # the reference only
            assert lstm is not None
            # time relative to nn.LSTM: its rate / ours
            print(
                f"{cell:<10}{seg:>8}{train:>14.0f}{forecast:>16.0f}"
                f"{lstm[0] / train:>14.2f}{lstm[1] / forecast:>13.2f}",
                flush=True,
            )
    print(f"load_1m {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
