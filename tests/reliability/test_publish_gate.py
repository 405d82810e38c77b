"""Nothing broken is published: a model whose scores are not finite is never logged, registered
or given an alias; its run is marked FAILED with the error text."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from app_runner import run_inprocess
from mlflow import MlflowClient
from pipeline_helpers import TINY_TRAIN

from forecast.data import synthetic_long
from forecast.errors import NonFiniteError
from forecast.training import check_finite


def test_check_finite_names_the_bad_scores():
    check_finite({"val/mae": 1.0, "test/mae": 2.0}, 0.5, "val/loss")
    with pytest.raises(NonFiniteError, match=r"test/rmse=inf.*not logged, registered"):
        check_finite({"test/mae": 1.0, "test/rmse": float("inf"), "val/mae": float("nan")})
    with pytest.raises(NonFiniteError, match=r"val/loss=nan"):
        check_finite({"val/mae": 1.0}, float("nan"), "val/loss")


@pytest.mark.slow
def test_huge_targets_do_not_move_the_champion(tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    good = synthetic_long(n_series=3, length=80, seed=2)
    bad = good.copy()
    bad.loc[bad["unique_id"] == "s0", "y"] *= 1e30  # finite in float32, but its squares are not
    common = [*TINY_TRAIN, f"paths.root_dir={tmp_path}", f"paths.log_dir={tmp_path}/logs"]
    common += ["register=true", "registry.name=gate", "export=[]"]
    for name, frame in (("good", good), ("bad", bad)):
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)

    first = run_inprocess(
        "train.py", [*common, f"data.path={tmp_path / 'good.parquet'}"], tmp_path, monkeypatch, capsys
    )
    assert first.code == 0, first.stderr[-3000:]
    second = run_inprocess(
        "train.py", [*common, f"data.path={tmp_path / 'bad.parquet'}"], tmp_path, monkeypatch, capsys
    )
    assert second.code == NonFiniteError.exit_code, second.stderr[-3000:]
    assert second.last_line.startswith("error: validation/test metrics are not finite")
    assert "Traceback" not in second.stderr

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    versions = client.search_model_versions("name='gate'")
    assert [str(v.version) for v in versions] == ["1"]  # the bad model was never registered
    assert str(client.get_model_version_by_alias("gate", "champion").version) == "1"
    runs = mlflow.search_runs(search_all_experiments=True, order_by=["start_time DESC"])
    latest = runs.iloc[0]
    assert latest["status"] == "FAILED"
    assert latest["tags.error"].startswith("validation/test metrics are not finite")
    assert latest["tags.error.type"] == "NonFiniteError"
    assert not np.isfinite(
        latest[[c for c in runs.columns if c.startswith("metrics.test/")]].astype(float)
    ).all()
    artifacts = client.list_artifacts(latest["run_id"])
    assert "model" not in {a.path for a in artifacts}
