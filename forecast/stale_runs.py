"""Close the MLflow runs of trainings that were killed (`kill -9`, a lost node) and never resumed.

A killed process cannot end its own run, so each training tags its run with its host and PID
(`forecast.host`, `forecast.pid`, and on Linux the process start time, against PID reuse), and
the next training start of the experiment marks RUNNING runs KILLED when that process is gone:
- on this host: when no live process has that PID (and start time);
- on another host: only when the run started more than `OTHER_HOST_MAX_AGE` ago, since their
  processes cannot be checked from here;
- runs without these tags (other tools, sweep parent runs) are never touched.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Collection
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import RunTag

log = logging.getLogger(__name__)

HOST_TAG = "forecast.host"
PID_TAG = "forecast.pid"
PID_START_TAG = "forecast.pid_start"  # /proc/<pid>/stat start time (Linux), so a reused PID is not "alive"
REASON_TAG = "forecast.end_reason"
OTHER_HOST_MAX_AGE = 7 * 24 * 3600.0  # seconds: longer than any training this project runs


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None without /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None where unknown."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def process_tags() -> dict[str, str]:
    """The tags that let a later training tell whether this process still runs."""
    pid = os.getpid()
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}
    start = process_start(pid)
    if start is not None:
        tags[PID_START_TAG] = start
    return tags


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether `pid` runs on this host (not a zombie) and, when `start` is given, is that same process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    fields = _proc_stat(pid)
    if fields is None:
        return True  # no /proc (macOS): the signal check is all there is
    if fields[0] in ("Z", "X"):
        return False  # killed, not yet reaped by its parent
    return start is None or process_start(pid) == start


def tag_process(client: MlflowClient, run_id: str) -> None:
    """Record this process (host, PID, start) on the run, replacing a previous process's tags."""
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in process_tags().items()])


def mark_dead_runs_killed(
    client: MlflowClient, experiment_id: str, keep: Collection[str] = (), now: float | None = None
) -> list[str]:
    """Set RUNNING runs of the experiment whose process is gone to KILLED; return their ids."""
    now = time.time() if now is None else now
    host = socket.gethostname()
    killed: list[str] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], "attributes.status = 'RUNNING'", max_results=500, page_token=token
        )
        for run in page:
            reason = _dead_reason(run.data.tags, run.info.start_time, host, now)
            if reason is None or run.info.run_id in keep:
                continue
            client.set_tag(run.info.run_id, REASON_TAG, reason)
            client.set_terminated(run.info.run_id, "KILLED")
            killed.append(run.info.run_id)
        token = page.token
        if not token:
            break
    if killed:
        log.warning(
            "marked %d MLflow run(s) KILLED, their training process is gone: %s",
            len(killed),
            ", ".join(killed),
        )
    return killed


def _dead_reason(tags: dict[str, str], start_ms: int | None, host: str, now: float) -> str | None:
    """Why the run's process is known to be gone, or None when it may still run."""
    run_host, pid = tags.get(HOST_TAG), tags.get(PID_TAG)
    if run_host is None or pid is None or not pid.isdigit():
        return None
    if run_host == host:
        if process_alive(int(pid), tags.get(PID_START_TAG)):
            return None
        return f"process {pid} on {host} ended without closing the run (killed?); found by pid {os.getpid()}"
    age = now - (start_ms or 0) / 1000.0
    if age <= OTHER_HOST_MAX_AGE:
        return None
    return f"started {age / 86400:.0f} days ago on {run_host} and never closed; found from {host}"


def claim_run(client: MlflowClient, run_id: str, experiment_id: str, resumed: bool) -> None:
    """Tag the run with this process (reopened when resumed) and close the runs of dead trainings."""
    from mlflow.exceptions import MlflowException

    try:
        tag_process(client, run_id)
        if resumed:  # the next start may have marked it KILLED while it waited to be resumed
            client.update_run(run_id, status="RUNNING")
        mark_dead_runs_killed(client, experiment_id, keep={run_id})
    except (MlflowException, OSError) as err:
        log.warning("could not check the experiment for runs of killed trainings: %s", err)
