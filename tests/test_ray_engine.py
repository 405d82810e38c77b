"""engine=ray: Ray Data over partitions of series gives the local engine's forecast, row for row."""

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from model_helpers import tiny_forecaster
from pipeline_helpers import batch_forecast, register_forecaster, run_pipeline

from forecast.batch import run_batch_forecast
from forecast.data import synthetic_long
from forecast.engines.request import RayOptions

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

L, H = 24, 6


@pytest.fixture
def setup(isolated_mlflow, tmp_path):
    """A registered model with 80% and 95% intervals and a history of 12 series, rows grouped by
    series: the interval columns are part of every partition's schema."""
    history = synthetic_long(n_series=12, length=80, seed=5)
    f = tiny_forecaster(history, data={"val_size": 4 * H}, intervals=[80, 95])
    register_forecaster(f, history, "ray-test", tmp_path, L)
    source = tmp_path / "history.parquet"
    local = batch_forecast("models:/ray-test@champion", history, source, tmp_path / "local.parquet")
    expected = pd.read_parquet(local)
    assert list(expected.columns)[2:] == ["y_hat", "y_hat_lo_80", "y_hat_hi_80", "y_hat_lo_95", "y_hat_hi_95"]
    return source, expected


def assert_same_rows(folder: Path, expected: pd.DataFrame) -> None:
    files = sorted(folder.glob("*.parquet"))
    assert len(files) >= 1
    for f in files:
        assert pq.read_schema(f).metadata[b"forecast.name"] == b"ray-test"
    got = pd.read_parquet(folder).sort_values(["unique_id", "ds"], ignore_index=True)
    expected = expected.sort_values(["unique_id", "ds"], ignore_index=True)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-5)


def test_local_ray_matches_the_local_engine(setup, tmp_path):
    source, expected = setup
    out = tmp_path / "ray-out"
    out.mkdir()
    (out / "stale.parquet").write_bytes(b"an earlier output, replaced whole")
    run_batch_forecast(
        "models:/ray-test@champion",
        str(source),
        str(out),
        str(tmp_path),
        engine="ray",
        ray=RayOptions(num_cpus=2, rows_per_partition=300, init_kwargs={"object_store_memory": 200 * 2**20}),
    )
    assert not (out / "stale.parquet").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ray-out")]  # no temp folder left
    assert_same_rows(out, expected)


def test_cli_joins_a_running_cluster(setup, tmp_path, subprocess_env, ray_cluster):
    """`ray.address=auto` finds the session's head through RAY_ADDRESS, as on a cluster's node."""
    source, expected = setup
    out = tmp_path / "cli-out"
    args = [
        "model_uri=models:/ray-test@champion",
        f"input={source}",
        f"output={out}",
        "engine=ray",
        "ray.address=auto",
        "ray.rows_per_partition=500",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    # run_pipeline's timeout, 300 s: worker processes start slowly on a busy 2-core machine (120 s
    # was hit once)
    run_pipeline("batch_forecast.py", args, tmp_path, ray_cluster.env(subprocess_env))
    assert_same_rows(out, expected)


def test_partitions_run_in_parallel_each_series_once(ray_cluster):
    """Ray 2.60's default shuffle handed every partition to one task (one process, in turn):
    the engine's task shuffle gives each partition its own task, run side by side."""
    import pyarrow as pa

    from forecast.engines.ray import by_partition, task_shuffle

    def who_forecast(table, pause: float):
        """A stand-in for forecast_partition (defined here: Ray ships it by value): which process
        had which partition, and its series."""
        import os
        import time

        from forecast.engines.ray import PARTITION

        time.sleep(pause)  # long enough for the other worker to take the next partition meanwhile
        ids = table.column("unique_id").unique().to_pylist()
        return pa.table(
            {
                "pid": [os.getpid()] * len(ids),
                "part": [table.column(PARTITION)[0].as_py()] * len(ids),
                "id": ids,
            }
        )

    history = synthetic_long(n_series=16, length=10, seed=1)
    rows = len(history) // 4
    blocks = [
        pa.Table.from_pandas(history.iloc[i * rows : (i + 1) * rows], preserve_index=False) for i in range(4)
    ]
    ray.init(address=ray_cluster.address, include_dashboard=False)
    try:
        with task_shuffle():
            data = ray.data.from_arrow(blocks)  # four blocks, as a file of row groups reads
            done = by_partition(data, "unique_id", 4, who_forecast, {"pause": 1.0}, 2, 1.0).to_pandas()
    finally:
        ray.shutdown()
    assert sorted(done["id"]) == sorted(history["unique_id"].unique())  # every series once
    assert done.groupby("id")["part"].nunique().max() == 1  # whole, in one partition
    assert done["part"].nunique() == 4
    assert done["pid"].nunique() == 2, done  # the two workers shared the partitions
