"""SIGKILL `pipelines/batch_forecast.py` at chosen moments, for both engines.

After every kill the previous good output is byte-identical (or, for a kill just after the
commit, the complete new output), never partial; the next run removes what the killed one left
beside the output (its temporary file or folder) and completes. Moments are detected by
watching the run (its log, its temporary file appearing, growing, getting its Parquet footer),
or, where a moment lasts microseconds (between the footer and the rename, between the Ray
engine's folder swap and its cleanup), by a SIGKILL the run sends itself from inside the
commit (`_inject`). Every kill point is appended to `KILLS` and printed at the end of the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from model_helpers import tiny_forecaster
from pipeline_helpers import ROOT, register_forecaster

import forecast.data.staging as staging
from forecast.batch import run_batch_forecast
from forecast.data import synthetic_long

pytestmark = pytest.mark.slow

L, H = 24, 6
MODEL = "models:/kill-test@champion"
SLOW = ["chunk_rows=120", "batch_size=3"]  # 80 small appends: a stream of some seconds
FAST = ["chunk_rows=1000000", "batch_size=4096"]

# A run that kills itself inside the commit: KILL_AT names the moment, KILL_OUTPUT the output.
_INJECT = """
import os, runpy, signal, sys

target, where = os.environ["KILL_OUTPUT"], os.environ["KILL_AT"]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if where in ("before-rename", "after-rename"):
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.fspath(dst) != target:
            return real_replace(src, dst, *args, **kwargs)
        if where == "before-rename":  # closed, footer written and flushed: the last instant
            die()
        real_replace(src, dst, *args, **kwargs)
        die()

    os.replace = replace
elif where == "after-swap":
    import forecast.engines.ray as engine

    real_exchange = engine._exchange

    def exchange(a, b):
        swapped = real_exchange(a, b)
        die()  # the new folder is in place, the previous one under the temporary name
        return swapped

    engine._exchange = exchange
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


@dataclass
class World:
    """A registered model, a big input, a small one and the complete forecast of the big one."""

    root: Path
    env: dict[str, str]
    big: Path
    small: Path
    reference: pd.DataFrame
    previous: bytes  # a good output of the small input: what every kill must leave in place


KILLS: list[str] = []


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    import mlflow

    root = tmp_path_factory.mktemp("kill")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        try:
            train = synthetic_long(n_series=6, length=80, seed=4)
            register_forecaster(tiny_forecaster(train), train, "kill-test", root, L)
            big, small = root / "big.parquet", root / "small.parquet"
            synthetic_long(n_series=240, length=40, seed=5).to_parquet(big, index=False)
            synthetic_long(n_series=5, length=40, seed=6).to_parquet(small, index=False)
            common = {"root_dir": str(root), "progress": "none"}
            ref = run_batch_forecast(MODEL, str(big), str(root / "ref.parquet"), **common)
            prev = run_batch_forecast(MODEL, str(small), str(root / "prev.parquet"), **common)
        finally:
            mlflow.set_tracking_uri(None)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    return World(root, env, big, small, pd.read_parquet(ref), prev.read_bytes())


# -- running and killing -----------------------------------------------------------------------
@dataclass
class Run:
    proc: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def start(world: World, output: Path, extra: list[str], inject: str | None = None, tag: str = "run") -> Run:
    """Start the pipeline on the big input in its own process group, its output to a log file."""
    log = output.parent / f"{tag}.log"
    script = str(ROOT / "pipelines" / "batch_forecast.py")
    env = dict(world.env)
    command = [sys.executable, script]
    if inject:
        wrapper = output.parent / "inject.py"
        wrapper.write_text(_INJECT)
        command = [sys.executable, str(wrapper), script]
        env.update(KILL_AT=inject, KILL_OUTPUT=str(output))
    args = [f"model_uri={MODEL}", f"input={world.big}", f"output={output}", "progress=none"]
    args.append("overwrite=true")  # every run forecasts: a committed output is not "already done"
    args.append(f"hydra.run.dir={output.parent / 'hydra' / tag}")
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [*command, *args, *extra],
            cwd=output.parent,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ray's processes can be found and ended
        )
    STARTED.append(Run(proc, log))
    return STARTED[-1]


STARTED: list[Run] = []


@pytest.fixture(autouse=True)
def _end_started_runs():
    """A failed test ends the runs it started (and their process groups), no others."""
    yield
    while STARTED:
        run = STARTED.pop()
        # The group id cannot be reused while a member lives, so this reaches only our processes.
        if run.proc.poll() is None or _group_alive(run.proc.pid):
            with suppress(ProcessLookupError):
                os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running (zombies aside)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def reap(run: Run, timeout: float = 60) -> None:
    """Wait for the run's process and for everything it started (Ray's) to be gone."""
    run.proc.wait(timeout=timeout)
    deadline = time.monotonic() + 30
    while _group_alive(run.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(run.proc.pid):  # only our own process group, started above
        os.killpg(run.proc.pid, signal.SIGKILL)


def kill(run: Run) -> None:
    """SIGKILL the pipeline's process (not its group: Ray's processes must notice by themselves)."""
    run.proc.send_signal(signal.SIGKILL)
    reap(run)
    assert run.proc.returncode == -signal.SIGKILL


def wait_for(
    run: Run, moment: Callable[[], bool], what: str, timeout: float = 240, may_end: bool = False
) -> bool:
    """Poll until `moment()` holds; fail if the run ends first (return False if `may_end`)."""
    deadline = time.monotonic() + timeout
    while not moment():
        if run.proc.poll() is not None:
            if may_end and run.proc.returncode == 0:
                return False
            raise AssertionError(
                f"the run ended ({run.proc.returncode}) before {what}:\n{run.text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            kill(run)
            raise AssertionError(f"no {what} within {timeout}s:\n{run.text()[-3000:]}")
        time.sleep(0.002)
    return True


def leftovers(target: Path) -> list[Path]:
    """The hidden temporary entries beside `target` (files or folders)."""
    return sorted(p for p in target.parent.iterdir() if staging._writer(target, p) is not None)


def temp_files(target: Path, run: Run | None = None) -> list[Path]:
    """Temporary files beside `target`; only those of `run`'s process if given."""
    files = [p for p in leftovers(target) if p.name.endswith(".tmp") and p.is_file()]
    return [p for p in files if run is None or staging._writer(target, p)[1] == run.proc.pid]


def growing(target: Path, run: Run, times: int) -> Callable[[], bool]:
    """A moment: `run`'s temporary file was seen to grow `times` times."""
    sizes: set[int] = set()

    def moment() -> bool:
        sizes.add(size(target, run))
        return len(sizes - {-1, 0}) > times

    return moment


def size(target: Path, run: Run) -> int:
    """Size of `run`'s temporary file (-1: none yet)."""
    files = temp_files(target, run)
    try:
        return max((p.stat().st_size for p in files), default=-1)
    except FileNotFoundError:
        return -1


def footer_written(target: Path, run: Run) -> bool:
    """`run`'s temporary file ends with the Parquet magic: closed, about to be renamed."""
    for path in temp_files(target, run):
        try:
            with path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() < 12:
                    continue
                f.seek(-4, os.SEEK_END)
                if f.read(4) == b"PAR1":
                    return True
        except OSError:
            continue
    return False


def only_own_leftovers(target: Path, run: Run) -> list[Path]:
    """What the killed run left; anything older must have been swept when it started."""
    left = leftovers(target)
    pids = {staging._writer(target, p)[1] for p in left}
    assert pids <= {run.proc.pid}, f"leftovers of earlier runs were not removed: {left}"
    return left


def same_rows(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    key = ["unique_id", "ds"]
    got = got.sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(
        got, expected.sort_values(key, ignore_index=True), check_exact=False, rtol=1e-5
    )


_CLOCK = [time.monotonic()]


def record(engine: str, moment: str, outcome: str) -> None:
    """Note a kill point tried and its outcome (printed at the end of the test, with -s)."""
    now = time.monotonic()
    KILLS.append(f"{engine}: {moment} -> {outcome} ({now - _CLOCK[0]:.0f}s)")
    _CLOCK[0] = now


# -- the local engine --------------------------------------------------------------------------
def test_local_engine_survives_kills_at_every_moment(world, tmp_path):
    out = tmp_path / "forecast.parquet"
    out.write_bytes(world.previous)
    good = world.previous  # what the output must hold after each kill
    _CLOCK[0] = time.monotonic()

    def check_kept(run: Run, moment: str) -> None:
        assert out.read_bytes() == good, f"{moment}: the previous output changed"
        left = only_own_leftovers(out, run)
        record("local", moment, f"previous output intact, {len(left)} temporary file(s) left")

    # 1. while loading the model (after the output check, before the temporary file exists)
    run = start(world, out, SLOW, tag="loading")
    wait_for(run, lambda: "loading model" in run.text(), "the model loading")
    kill(run)
    check_kept(run, "loading the model")

    # 2. the temporary file just created (at most the first appends in it)
    run = start(world, out, SLOW, tag="created")
    wait_for(run, lambda: bool(temp_files(out, run)), "a temporary file")
    kill(run)
    check_kept(run, "temporary file just created")
    assert leftovers(out), "a killed writer leaves its temporary file (removed by the next run)"

    # 3. mid-stream: the temporary file seen growing five times (row groups appended)
    run = start(world, out, SLOW, tag="mid")
    wait_for(run, growing(out, run, times=5), "five appends")
    kill(run)
    check_kept(run, "mid-stream (after five appends)")
    (partial,) = temp_files(out, run)
    with pytest.raises(pa.ArrowInvalid):  # what it left is no valid Parquet file: never published
        pq.read_metadata(partial)

    # 4. a concurrent run commits while this one streams: its file is kept, then it is killed.
    # SIGSTOP holds the slow run mid-stream, alive, however fast this machine is.
    slow = start(world, out, SLOW, tag="concurrent-slow")
    wait_for(slow, growing(out, slow, times=2), "the slow run's appends")
    slow.proc.send_signal(signal.SIGSTOP)
    mine = temp_files(out, slow)
    fast = start(world, out, FAST, tag="concurrent-fast")
    assert fast.proc.wait(timeout=240) == 0, fast.text()[-3000:]
    assert mine and all(p.exists() for p in mine), "a live writer's file was removed"
    assert slow.proc.poll() is None
    same_rows(pd.read_parquet(out), world.reference)
    good = out.read_bytes()
    kill(slow)
    check_kept(slow, "mid-stream while a concurrent run committed")

    # 5. the footer written (file closed): the instant before the rename, if the poll is quick enough
    run = start(world, out, SLOW, tag="footer")
    seen = wait_for(run, lambda: footer_written(out, run), "the closed file", timeout=300, may_end=True)
    if seen:
        kill(run)
    if out.read_bytes() == good:
        check_kept(run, "temporary file closed, before the rename")
    else:  # the rename won the race (or the poll missed the instant): the complete new output
        same_rows(pd.read_parquet(out), world.reference)
        assert leftovers(out) == []
        outcome = "rename won the race" if seen else "poll missed the instant, run completed"
        record("local", "temporary file closed, before the rename", f"{outcome}: new output complete")
        good = out.read_bytes()

    # 6. the rename itself: SIGKILL from inside, just before and just after os.replace
    out.write_bytes(world.previous)
    good = world.previous
    run = start(world, out, FAST, inject="before-rename", tag="before-rename")
    reap(run)
    assert run.proc.returncode == -signal.SIGKILL, run.text()[-3000:]
    check_kept(run, "footer flushed, just before the rename")
    full = temp_files(out, run)
    assert len(full) == 1 and len(pq.read_table(full[0])) == len(world.reference)  # complete, unpublished

    run = start(world, out, FAST, inject="after-rename", tag="after-rename")
    reap(run)
    assert run.proc.returncode == -signal.SIGKILL, run.text()[-3000:]
    same_rows(pd.read_parquet(out), world.reference)
    assert only_own_leftovers(out, run) == []
    record("local", "just after the rename", "new output complete, nothing left")

    # The next normal run: completes, and nothing is left beside the output.
    out.write_bytes(world.previous)
    for_stray = staging.staging_path(out)  # and a leftover of this test process: live, so kept
    for_stray.write_bytes(b"live writer")
    rerun = start(world, out, FAST, tag="rerun")
    assert rerun.proc.wait(timeout=300) == 0, rerun.text()[-3000:]
    same_rows(pd.read_parquet(out), world.reference)
    assert leftovers(out) == [for_stray]
    for_stray.unlink()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    print("\nkill points tried:\n  " + "\n  ".join(KILLS))


# -- the Ray engine ----------------------------------------------------------------------------
# The session's Ray head: a killed driver's workers are the head's to end, and no local Ray is
# started and torn down per run.
RAY = ["engine=ray", "ray.rows_per_partition=2400", "batch_size=64"]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_ray_engine_survives_kills_while_writing_and_at_the_swap(world, tmp_path, ray_cluster):
    ray = [*RAY, f"ray.address={ray_cluster.address}"]
    out = tmp_path / "ray-out"  # not "forecast": Ray workers would import it as the package
    out.mkdir()
    (out / "part-00000.parquet").write_bytes(world.previous)
    good = folder_bytes(out)
    ray_kills: list[str] = []
    _CLOCK[0] = time.monotonic()

    # 1. while Ray writes the temporary folder (at least one file of it written)
    run = start(world, out, ray, tag="ray-writing")

    def writing() -> bool:
        try:
            return any(p.is_dir() and any(p.iterdir()) for p in leftovers(out))
        except FileNotFoundError:  # vanished while looked at
            return False

    wait_for(run, writing, "Ray's temporary folder with a file in it", timeout=300)
    kill(run)
    assert folder_bytes(out) == good
    left = only_own_leftovers(out, run)
    record(
        "ray", "writing the temporary folder", f"previous output intact, {len(left)} temporary folder(s) left"
    )
    ray_kills.append("writing")

    # 2. the swap done (renameat2 exchange), the previous output not yet removed from its temporary name
    run = start(world, out, ray, inject="after-swap", tag="ray-swap")
    reap(run, timeout=300)
    assert run.proc.returncode == -signal.SIGKILL, run.text()[-3000:]
    same_rows(pd.read_parquet(out), world.reference)
    left = only_own_leftovers(out, run)
    assert len(left) == 1 and folder_bytes(left[0]) == good  # the previous output, to be swept
    record(
        "ray", "just after the folder swap", "new output complete, previous one left under a temporary name"
    )
    ray_kills.append("swap")

    # The next normal run: completes, and nothing is left beside the output.
    shutil.rmtree(out)
    out.mkdir()
    (out / "part-00000.parquet").write_bytes(world.previous)
    rerun = start(world, out, ray, tag="ray-rerun")
    assert rerun.proc.wait(timeout=300) == 0, rerun.text()[-3000:]
    reap(rerun)
    same_rows(pd.read_parquet(out), world.reference)
    assert leftovers(out) == []
    assert len(ray_kills) == 2
    print("\nkill points tried:\n  " + "\n  ".join(KILLS))
