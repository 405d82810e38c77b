"""A Ray head node that tests start once per session and join by address."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from server_helpers import free_port, kill_group


class RayHead:
    """`ray start --head --block` on 127.0.0.1 with 2 CPUs; `address` is what `ray.address=` takes."""

    def __init__(self, home: Path, num_cpus: int = 2):
        self.home = home
        self.port = free_port()
        self.num_cpus = num_cpus
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """`base` (default: this process's) with RAY_ADDRESS pointing here, as `address=auto` finds it."""
        return {
            **(os.environ if base is None else base),
            "RAY_ADDRESS": self.address,
            "RAY_AUTH_MODE": "disabled",
        }

    def start(self, timeout: float = 150) -> None:
        """Start the head and wait until a driver can join it."""
        ray_bin = Path(sys.executable).with_name("ray")
        args = [
            str(ray_bin), "start", "--head", "--block", f"--port={self.port}",
            "--node-ip-address=127.0.0.1", f"--num-cpus={self.num_cpus}", "--include-dashboard=false",
            "--object-store-memory=200000000", "--disable-usage-stats",
        ]  # fmt: skip
        log = open(self.home / "head.log", "ab")  # kept open: the head writes to it
        # A session of its own: stopping it takes every Ray process it started.
        self.proc = subprocess.Popen(
            args, cwd=self.home, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        probe = f"import ray; ray.init(address={self.address!r}); ray.shutdown()"
        deadline = time.time() + timeout
        while True:
            done = subprocess.run(
                [sys.executable, "-c", probe], env=self.env(), capture_output=True, timeout=60
            )
            if done.returncode == 0:
                return
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                tail = (self.home / "head.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"ray start --head did not come up:\n{tail}\n{done.stderr[-2000:]!r}")
            time.sleep(1)

    def stop(self) -> None:
        """SIGKILL the head's process group: a throwaway cluster (a SIGTERM waited 10 s every time)."""
        if self.proc is not None:
            kill_group(self.proc)
        self.proc = None
