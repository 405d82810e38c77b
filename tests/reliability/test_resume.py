"""Issue 9: a training killed mid-epoch resumes with `resume=latest` alone; killed runs are closed;
checkpoints are read with weights_only=True, so a crafted one cannot run code."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import torch
from app_runner import run_inprocess
from mlflow import MlflowClient
from omegaconf import ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError
from pipeline_helpers import ROOT, TINY_TRAIN
from stores import new_store

from forecast.checkpoints import (
    CONFIG_KEY,
    OVERRIDES_KEY,
    RUN_ID_KEY,
    CheckpointMetadata,
    load_checkpoint,
    restore_config,
)
from forecast.data import synthetic_long
from forecast.errors import ConfigError, InputFileError, UnsafeCheckpointError
from forecast.stale_runs import (
    HOST_TAG,
    OTHER_HOST_MAX_AGE,
    PID_START_TAG,
    PID_TAG,
    REASON_TAG,
    claim_run,
    mark_dead_runs_killed,
    process_alive,
    process_tags,
)

HERE = Path(__file__).resolve().parent
LINUX = Path("/proc/self/stat").exists()

# 4 epochs of 3 batches; the test callback holds a training that is to be killed at batch 1 of
# the epoch the test names (the file `hold`), so the kill lands mid-epoch, after last.ckpt of an
# earlier epoch exists. The other runs never wait.
ARGS = [
    *TINY_TRAIN,
    "data.path=history.parquet",
    "trainer.max_epochs=4",
    "callbacks.early_stopping=null",
    "export=[]",
    "+callbacks.pause._target_=resume_callbacks.PauseMidEpoch",
    "+callbacks.pause.progress=progress.txt",
    "+callbacks.pause.hold=hold",
]


# --- restoring the run's config -------------------------------------------------------------


def _saved(**extra) -> dict:
    config = {
        "seed": 42,
        "resume": None,
        "paths": {"output_dir": "/runs/a"},
        "model": {"hidden_size": 16, "quantiles": None},
        "trainer": {"max_epochs": 4},
    }
    return {
        "state_dict": {},
        CONFIG_KEY: OmegaConf.to_yaml(config),
        OVERRIDES_KEY: ["model.hidden_size=16", "data=file"],
        **extra,
    }


def _composed(hidden: int = 128, epochs: int = 4):
    return OmegaConf.create(
        {
            "seed": 42,
            "resume": "latest",
            "paths": {"output_dir": "/runs/b"},
            "model": {"hidden_size": hidden, "quantiles": None},
            "trainer": {"max_epochs": epochs},
        }
    )


def test_resume_alone_restores_the_checkpoints_config():
    cfg = restore_config(_composed(hidden=128), _saved(), "/runs/a/last.ckpt", [])
    assert cfg.model.hidden_size == 16 and cfg.paths.output_dir == "/runs/a"
    assert cfg.resume == "/runs/a/last.ckpt"
    with pytest.raises(ConfigAttributeError):
        cfg.no_such_key  # noqa: B018 (struct mode, as Hydra composes it)


def test_resume_accepts_the_runs_own_overrides_and_equal_values():
    # Verbatim original overrides (even a group choice), or a value the run already has.
    cfg = restore_config(
        _composed(hidden=16),
        _saved(),
        "x.ckpt",
        ["model.hidden_size=16", "data=file", "trainer.max_epochs=4"],
    )
    assert cfg.model.hidden_size == 16


@pytest.mark.parametrize(
    ("override", "composed", "shown"),
    [
        ("model.hidden_size=32", {"hidden": 32}, "model.hidden_size=32 (the run has model.hidden_size: 16)"),
        ("trainer.max_epochs=9", {"epochs": 9}, "trainer.max_epochs=9 (the run has trainer.max_epochs: 4)"),
        ("experiment=m4_hourly", {}, "experiment=m4_hourly (not among the run's overrides)"),
    ],
)
def test_resume_rejects_overrides_that_change_the_run(override, composed, shown):
    with pytest.raises(ConfigError) as err:
        restore_config(_composed(**composed), _saved(), "x.ckpt", [override])
    assert shown in str(err.value) and "start a new run" in str(err.value)
    assert ConfigError.exit_code == 2


# --- checkpoints hold plain values only -----------------------------------------------------


def test_checkpoints_are_written_plain_and_read_weights_only(tmp_path):
    checkpoint = {
        "state_dict": {"w": torch.ones(2)},
        "hyper_parameters": {"quantiles": ListConfig([0.1, 0.5, 0.9]), "hidden_size": 16},
        "datamodule_hyper_parameters": {"path": Path("history.csv")},
    }
    unsafe = tmp_path / "as_lightning_writes_it.ckpt"
    torch.save(checkpoint, unsafe)
    # What Lightning alone writes for model.loss=quantile cannot be read weights-only:
    with pytest.raises(UnsafeCheckpointError, match=r"omegaconf\.listconfig\.ListConfig"):
        load_checkpoint(unsafe)

    CheckpointMetadata("seed: 1\n", ["data=file"], "run123").on_save_checkpoint(None, None, checkpoint)
    torch.save(checkpoint, tmp_path / "ours.ckpt")
    loaded = load_checkpoint(tmp_path / "ours.ckpt")
    assert loaded["hyper_parameters"]["quantiles"] == [0.1, 0.5, 0.9]
    assert loaded["datamodule_hyper_parameters"]["path"] == "history.csv"
    assert loaded[CONFIG_KEY] == "seed: 1\n" and loaded[OVERRIDES_KEY] == ["data=file"]
    assert loaded[RUN_ID_KEY] == "run123"


class _RunsCommand:
    """Pickles as `os.system(<command>)`: what a crafted checkpoint does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _crafted(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "epoch": 0, "payload": _RunsCommand(f"touch {marker}")}, path)
    return path


def test_crafted_checkpoint_is_refused_before_it_runs(tmp_path):
    control = tmp_path / "control_marker"
    torch.load(_crafted(tmp_path / "control.ckpt", control), weights_only=False)
    assert control.exists(), "the crafted file does run its command under a full unpickle"

    marker = tmp_path / "marker"
    with pytest.raises(UnsafeCheckpointError, match="posix.system|nt.system"):
        load_checkpoint(_crafted(tmp_path / "evil.ckpt", marker))
    assert not marker.exists()


def test_unreadable_checkpoint_is_an_input_file_error(tmp_path):
    (tmp_path / "truncated.ckpt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputFileError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "truncated.ckpt")


def test_train_refuses_a_crafted_checkpoint_in_one_line(tmp_path, isolated_mlflow, monkeypatch, capsys):
    marker = tmp_path / "marker"
    crafted = _crafted(tmp_path / "crafted.ckpt", marker)
    result = run_inprocess("train.py", [f"resume={crafted}"], tmp_path, monkeypatch, capsys)
    assert result.code == UnsafeCheckpointError.exit_code == 4, result.stderr[-2000:]
    assert result.last_line.startswith(f"error: refusing to load checkpoint {crafted}"), result.last_line
    assert "posix.system" in result.last_line and "Traceback" not in result.stderr
    assert not marker.exists()


# --- runs of killed trainings are closed ----------------------------------------------------


def _dead_pid() -> int:
    """A PID no process has: above the kernel's limit (at most 2**22 on Linux, 99998 on macOS),
    so it answers as a process that ended does (no such process), without starting one."""
    return 2**22 + 1


def test_next_start_marks_runs_of_dead_processes_killed(isolated_mlflow):
    client = MlflowClient()
    exp = client.create_experiment("reap")
    host, now = socket.gethostname(), time.time()
    me = process_tags()

    def run(tags: dict[str, str], age_s: float = 60.0) -> str:
        return client.create_run(exp, start_time=int((now - age_s) * 1000), tags=tags).info.run_id

    dead = run({HOST_TAG: host, PID_TAG: str(_dead_pid())})
    alive = run(me)
    resumed = run({HOST_TAG: host, PID_TAG: str(_dead_pid())})
    other_recent = run({HOST_TAG: "elsewhere", PID_TAG: "1"})
    other_old = run({HOST_TAG: "elsewhere", PID_TAG: "1"}, age_s=OTHER_HOST_MAX_AGE + 3600)
    untagged = run({})
    finished = run({HOST_TAG: host, PID_TAG: str(_dead_pid())})
    client.set_terminated(finished, "FINISHED")
    reused = run({**me, PID_START_TAG: "1"}) if LINUX else None  # our PID, another process's start

    killed = mark_dead_runs_killed(client, exp, keep={resumed})

    expected = {dead, other_old} | ({reused} if reused else set())
    assert set(killed) == expected
    status = {
        r: client.get_run(r).info.status for r in [dead, alive, resumed, other_recent, other_old, untagged]
    }
    assert status == {
        dead: "KILLED",
        alive: "RUNNING",
        resumed: "RUNNING",
        other_recent: "RUNNING",
        other_old: "KILLED",
        untagged: "RUNNING",
    }
    assert client.get_run(finished).info.status == "FINISHED"
    assert "ended without closing the run" in client.get_run(dead).data.tags[REASON_TAG]

    # Resuming a run reopens it and tags it with the resuming process.
    claim_run(client, dead, exp, resumed=True)
    reopened = client.get_run(dead)
    assert reopened.info.status == "RUNNING" and reopened.data.tags[PID_TAG] == str(os.getpid())


@pytest.mark.slow  # a real process, killed and left unreaped
@pytest.mark.skipif(not LINUX, reason="zombie state is read from /proc")
def test_a_killed_but_unreaped_process_counts_as_gone():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_alive(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.time() + 10
        while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.time() < deadline
            time.sleep(0.02)
        assert not process_alive(proc.pid)  # a zombie still answers kill(pid, 0)
    finally:
        proc.wait()


# --- kill -9 mid-epoch, then resume=latest alone --------------------------------------------


def _train_and_kill(work: Path, env: dict, epoch: int = 1) -> Path:
    """Start a training, SIGKILL it in the middle of epoch `epoch`; return its run folder.

    With epoch >= 1 a last.ckpt of an earlier epoch exists when the signal is sent.
    """
    runs = work / "logs" / "train" / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    progress = work / "progress.txt"
    progress.unlink(missing_ok=True)
    hold = work / "hold"
    hold.write_text(str(epoch))  # PauseMidEpoch waits at batch 1 of this epoch until killed
    log = work / f"killed_{len(before)}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "pipelines" / "train.py"), *ARGS],
            cwd=work,
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        deadline = time.time() + 240
        while True:
            assert proc.poll() is None, f"training ended before the kill:\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, f"training never reached the middle of epoch {epoch}"
            new = set(runs.iterdir()) - before if runs.exists() else set()
            where = [int(n) for n in progress.read_text().split()] if progress.exists() else [-1, -1]
            saved = epoch == 0 or bool(new) and (next(iter(new)) / "checkpoints" / "last.ckpt").exists()
            if new and where[0] >= epoch and where[1] >= 1 and saved:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # mid-epoch: at batch 1 of 3, before validation
    finally:
        hold.unlink()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    (folder,) = set(runs.iterdir()) - before
    return folder


def _train_inprocess(args: list[str], work: Path, monkeypatch) -> None:
    """`python pipelines/train.py <args>` from `work`, in this process (`run_inprocess`, whose
    `capsys` a module fixture cannot have: the app's output goes to buffers instead)."""
    out, err = StringIO(), StringIO()
    captured = SimpleNamespace(readouterr=lambda: SimpleNamespace(out=out.getvalue(), err=err.getvalue()))
    with redirect_stdout(out), redirect_stderr(err):
        result = run_inprocess("train.py", args, work, monkeypatch, captured)
    assert result.code == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


def _newest_last_ckpt(work: Path) -> dict:
    found = sorted((work / "logs").glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return load_checkpoint(found[-1])


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """kill -9 run A (never resumed); an unbroken run U; kill -9 run K; `resume=latest` alone.

    The kills need processes of their own; U and the resume run in this process.
    """
    work = tmp_path_factory.mktemp("resume")
    synthetic_long(n_series=5, length=160, seed=3).to_parquet(work / "history.parquet")
    uri = new_store(work / "mlflow.db")
    tests = str(ROOT / "tests")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PYTHONPATH": os.pathsep.join(p for p in (tests, str(HERE), os.environ.get("PYTHONPATH")) if p),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    client = MlflowClient(tracking_uri=uri)

    def runs() -> dict[str, str]:
        exp = client.get_experiment_by_name("forecast")
        return {r.info.run_id: r.info.status for r in client.search_runs([exp.experiment_id])}

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.syspath_prepend(str(HERE))  # resume_callbacks, for the runs in this process
        try:
            _train_and_kill(work, env, epoch=0)
            (abandoned,) = runs()
            status_after_kill = runs()[abandoned]

            _train_inprocess(ARGS, work, monkeypatch)
            (unbroken,) = set(runs()) - {abandoned}
            unbroken_ckpt = _newest_last_ckpt(work)

            killed_folder = _train_and_kill(work, env)
            (killed,) = set(runs()) - {abandoned, unbroken}
            at_kill = load_checkpoint(killed_folder / "checkpoints" / "last.ckpt")

            _train_inprocess(["resume=latest"], work, monkeypatch)
        finally:
            mlflow.set_tracking_uri(None)
    return {
        "client": client,
        "runs": runs(),
        "abandoned": abandoned,
        "status_after_kill": status_after_kill,
        "unbroken": unbroken,
        "killed": killed,
        "unbroken_ckpt": unbroken_ckpt,
        "at_kill": at_kill,
        "resumed_ckpt": _newest_last_ckpt(work),
    }


@pytest.mark.slow
def test_resume_latest_alone_continues_the_killed_run(killed_and_resumed):
    s = killed_and_resumed
    assert s["at_kill"][RUN_ID_KEY] == s["killed"]
    assert s["at_kill"]["global_step"] < 12, "killed before the end"
    assert set(s["runs"]) == {s["abandoned"], s["unbroken"], s["killed"]}, "no new run for the resume"
    assert s["runs"][s["killed"]] == "FINISHED"
    assert s["resumed_ckpt"][RUN_ID_KEY] == s["killed"]
    # The run's own config came back: the paused callback and the tiny net, not the defaults.
    restored = OmegaConf.create(s["resumed_ckpt"][CONFIG_KEY])
    assert restored.model.hidden_size == 16 and restored.data.path == "history.parquet"


@pytest.mark.slow
def test_resumed_run_ends_at_the_unbroken_global_step(killed_and_resumed):
    s = killed_and_resumed
    assert s["resumed_ckpt"]["global_step"] == s["unbroken_ckpt"]["global_step"] == 4 * 3
    assert s["resumed_ckpt"]["epoch"] == s["unbroken_ckpt"]["epoch"]
    client = s["client"]
    steps = {r: {m.step for m in client.get_metric_history(s[r], "val/loss")} for r in ("unbroken", "killed")}
    assert steps["killed"] == steps["unbroken"] and len(steps["unbroken"]) == 4  # one per epoch


@pytest.mark.slow
def test_a_killed_run_never_resumed_is_marked_killed_by_the_next_start(killed_and_resumed):
    s = killed_and_resumed
    assert s["status_after_kill"] == "RUNNING", "a kill -9 leaves the run open"
    assert s["runs"][s["abandoned"]] == "KILLED"
    assert s["runs"][s["unbroken"]] == "FINISHED"
    tags = s["client"].get_run(s["abandoned"]).data.tags
    assert tags[HOST_TAG] == socket.gethostname() and REASON_TAG in tags
