"""An `mlflow server` on 127.0.0.1 that a test can start, kill and start again on the same store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

ADMIN_PASSWORD = "admin-password-for-tests"  # the basic-auth app needs >= 12 characters


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a process started with start_new_session=True and all it started; reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def start_and_wait(
    args: list[str],
    home: Path,
    log_name: str,
    env: Mapping[str, str],
    not_ready: Callable[[], str | None],
    timeout: float,
    every: float,
    failure: str,
) -> subprocess.Popen:
    """Start `args` in `home`, in a session of its own (a kill takes every process it starts),
    its output appended to `home`/`log_name`; poll `not_ready()` every `every` s until it says
    None (ready). If the process exits or `timeout` passes first, kill it and raise a RuntimeError:
    `failure`, the log's tail and what `not_ready` said last."""
    log = open(home / log_name, "ab")  # kept open: the process writes to it
    proc = subprocess.Popen(
        args, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.time() + timeout
    while (why := not_ready()) is not None:
        if proc.poll() is not None or time.time() > deadline:
            kill_group(proc)
            tail = (home / log_name).read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{failure}:\n{tail}\n{why}")
        time.sleep(every)
    return proc


def free_port() -> int:
    """A port nothing listens on (nothing will, until a test starts a server there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` with its own SQLite store and artifact folder under `home`.

    `auth=True` runs MLflow's basic-auth app; its admin is `admin` / ADMIN_PASSWORD.
    """

    def __init__(self, home: Path, port: int | None = None, auth: bool = False):
        self.home = home
        self.port = port or free_port()
        self.auth = auth
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> None:
        """Start it and wait for /health; the store and artifacts survive a kill and restart."""
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        args = [
            str(mlflow_bin), "server",
            "--backend-store-uri", f"sqlite:///{self.home / 'server.db'}",
            "--artifacts-destination", str(self.home / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        if self.auth:
            ini = self.home / "basic_auth.ini"
            ini.write_text(
                "[mlflow]\ndefault_permission = READ\n"
                f"database_uri = sqlite:///{self.home / 'basic_auth.db'}\nadmin_username = admin\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                "auth_cache_ttl_seconds = 300\n"  # one password hash per user, not one per request
            )
            args += ["--app-name", "basic-auth"]
            env.update(
                MLFLOW_AUTH_CONFIG_PATH=str(ini),
                MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
                MLFLOW_FLASK_SERVER_SECRET_KEY="secret-for-tests",
            )
        # A kill takes the server's worker processes with it.
        self.proc = start_and_wait(
            args,
            self.home,
            "server.log",
            env,
            self._unhealthy,
            timeout,
            every=0.5,
            failure="mlflow server did not start",
        )

    def _unhealthy(self) -> str | None:
        """None once /health answers 200; else what it answered."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                return None if resp.status == 200 else f"/health: HTTP {resp.status}"
        except OSError as err:
            return f"/health: {err}"

    def kill(self) -> None:
        """SIGKILL to the server and its workers, as a crash: no goodbye to the clients."""
        if self.proc is not None:
            kill_group(self.proc)
        self.proc = None

    def stop(self) -> None:
        """Terminate politely (end of the tests), then make sure."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
