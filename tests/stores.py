"""MLflow stores for tests: one SQLite store migrated per test process, copied wherever a test
needs a fresh one (a migration costs about a second; a copy, a millisecond)."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path

_TEMPLATE: list[Path] = []


def _template() -> Path:
    """The migrated empty store, built on first use in this process."""
    if not _TEMPLATE:
        import mlflow

        folder = Path(tempfile.mkdtemp(prefix="mlflow-template-"))
        db = folder / "mlflow.db"
        # The client migrates the schema on first use; nothing else is written.
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
        _TEMPLATE.append(db)
    return _TEMPLATE[0]


def new_store(db: Path) -> str:
    """A fresh, migrated store at `db` (its Default experiment's artifacts beside it); its URI."""
    db = Path(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template(), db)
    with sqlite3.connect(db) as con:
        con.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
            (str(db.parent / "mlruns" / "0"),),
        )
    return f"sqlite:///{db}"
