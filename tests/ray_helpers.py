"""A Ray head node that tests start once per session and join by address."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from server_helpers import free_port, kill_group, start_and_wait


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
        # Stopping it takes every Ray process it started.
        self.proc = start_and_wait(
            args,
            self.home,
            "head.log",
            self.env(),
            self._not_joined,
            timeout,
            every=1,
            failure="ray start --head did not come up",
        )

    def _not_joined(self) -> str | None:
        """None once a driver joins the head; else the driver's stderr."""
        probe = f"import ray; ray.init(address={self.address!r}); ray.shutdown()"
        done = subprocess.run([sys.executable, "-c", probe], env=self.env(), capture_output=True, timeout=60)
        return None if done.returncode == 0 else repr(done.stderr[-2000:])

    def stop(self) -> None:
        """SIGKILL the head's process group: a throwaway cluster (a SIGTERM waited 10 s every time)."""
        if self.proc is not None:
            kill_group(self.proc)
        self.proc = None
