"""`pip install` as a new user does it: the wheel's console scripts train and forecast anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from pipeline_helpers import TINY_TRAIN

from forecast.data import synthetic_long

ROOT = Path(__file__).resolve().parents[2]

# pyproject.toml installs these folders under other names (package-dir).
RENAMED = {"conf": "forecast.conf", "pipelines": "forecast.pipelines"}


def _packages_in_tree() -> set[str]:
    """Every folder the wheel must hold as a package, named as installed."""
    found = set()
    for top, name in {"forecast": "forecast", "hydra_plugins": "hydra_plugins", **RENAMED}.items():
        for folder in [ROOT / top, *(ROOT / top).rglob("*")]:
            if folder.is_dir() and "__pycache__" not in folder.parts:
                found.add(".".join([name, *folder.relative_to(ROOT / top).parts]))
    return found


def test_pyproject_lists_every_package_folder():
    """The package list is written by hand (discovery cannot rename conf/): a new folder must join it."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    in_tree = _packages_in_tree()
    assert not in_tree - listed, f"add to [tool.setuptools] packages: {sorted(in_tree - listed)}"
    assert not listed - in_tree, f"listed but not in the tree: {sorted(listed - in_tree)}"


def _run(cmd: list, cwd: Path, env: dict, timeout: int = 300, check: bool = True):
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{tail}")
    return proc


def _source_copy(dest: Path) -> Path:
    """The checkout's files that git does not ignore: what `pip install .` builds from, minus build/."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / os.fsdecode(name)
        if source.is_file():  # deleted but not yet staged files are listed too
            (dest / source.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / source.relative_to(ROOT))
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """The wheel, built via an sdist as `python -m build` does, in a venv of its own; its bin/ and env.

    The venv borrows this environment's third-party packages through a .pth file (no download,
    no torch install), but not its editable `forecast`: a .pth line adds a folder to sys.path
    without running that folder's own .pth files, the editable finder among them.
    """
    base = tmp_path_factory.mktemp("wheel")
    source = _source_copy(base / "source")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    build = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    sdist = _run([sys.executable, "-c", build, base / "dist"], source, env).stdout.split()[-1]
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", base / "dist"]
        + [base / "dist" / sdist],
        base,
        env,
    )
    (wheel,) = (base / "dist").glob("forecast-*.whl")

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], base, env)
    target = Path(sysconfig.get_path("purelib", vars={"base": venv, "platbase": venv}))
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (target / "_borrowed_packages.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel], base, env)
    return venv / "bin", env


@pytest.mark.slow
def test_the_venv_imports_forecast_from_the_wheel(installed, tmp_path):
    bin_dir, env = installed
    code = "import forecast, forecast.conf, forecast.pipelines; print(forecast.__file__)"
    where = Path(_run([bin_dir / "python", "-c", code], tmp_path, env).stdout.strip())
    assert bin_dir.parent in where.parents, where
    for script in ("forecast-train", "forecast-batch", "forecast-backtest", "forecast-promote"):
        assert (bin_dir / script).is_file(), script


@pytest.mark.slow
def test_help_lists_the_config_groups(installed, tmp_path):
    bin_dir, env = installed
    out = _run([bin_dir / "forecast-train", "--help"], tmp_path, env).stdout
    assert "== Configuration groups ==" in out
    groups = (
        # base: the typed schema every file of the group starts from (forecast.config)
        "data: base, epf_np_sample, file, m4_hourly_sample",
        "model: attention, base, bilstm, gru, lstm, peephole, slstm",
        "logger: mlflow",
    )
    for line in groups:
        assert line in out.splitlines(), line
    assert "trainer: cpu, ddp" in out
    # the search-path plugin adds forecast/... to other apps only, not a second copy to ours
    assert "forecast/model" not in out


@pytest.mark.slow
def test_python_m_forecast_names_its_commands(installed, tmp_path):
    bin_dir, env = installed
    proc = _run([bin_dir / "python", "-m", "forecast", "fit"], tmp_path, env, check=False)
    assert proc.returncode == 2
    assert "unknown command 'fit' (one of: train, batch, backtest, promote)" in proc.stderr


@pytest.mark.slow
def test_train_and_batch_forecast_from_a_folder_outside_the_repository(installed, tmp_path):
    bin_dir, env = installed
    work = tmp_path / "work"
    work.mkdir()
    assert ROOT not in work.parents
    synthetic_long(n_series=4, length=120, seed=5).to_csv(work / "history.csv", index=False)

    train = [*TINY_TRAIN, "data.path=history.csv", "register=true", "registry.name=wheel"]
    _run([bin_dir / "forecast-train", *train], work, env)
    assert (work / "mlflow.db").is_file() and (work / "logs" / "train").is_dir()

    batch = ["model_uri=models:/wheel@champion", "input=history.csv"]
    _run([bin_dir / "forecast-batch", *batch, "output=out/forecast.parquet"], work, env)
    out = pd.read_parquet(work / "out" / "forecast.parquet")
    assert len(out) == 4 * 6 and out["y_hat"].notna().all()

    # `python -m forecast batch` is the same app
    _run([bin_dir / "python", "-m", "forecast", "batch", *batch, "output=out/again.parquet"], work, env)
    pd.testing.assert_frame_equal(pd.read_parquet(work / "out" / "again.parquet"), out)

    # a user's mistake ends as one line and its exit code, as with pipelines/*.py
    proc = _run([bin_dir / "forecast-batch", "input=history.csv"], work, env, check=False)
    assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "model_uri" in proc.stderr
