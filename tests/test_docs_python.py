"""docs/python.md runs as written: every ```python block, top to bottom, in one namespace, in an
empty folder (its MLflow store, saved model and registered model land there)."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "python.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_the_page_has_examples():
    assert len(BLOCK.findall(PAGE.read_text())) >= 6


@pytest.mark.slow
def test_the_python_page_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the page's own default store
    mlflow.set_tracking_uri(None)
    namespace: dict = {"__name__": "__docs__"}
    try:
        for number, code in enumerate(BLOCK.findall(PAGE.read_text()), 1):
            try:
                exec(compile(code, f"docs/python.md block {number}", "exec"), namespace)
            except Exception as err:
                raise AssertionError(f"docs/python.md block {number} failed: {err!r}\n{code}") from err
    finally:
        mlflow.set_tracking_uri(None)
    assert (tmp_path / "lstm_model" / "model.json").is_file()
    assert (tmp_path / "mlflow.db").is_file()
    assert namespace["same"].model.hidden_size == 64
