"""Model registry: versions with aliases (`champion`, `candidate`), not deprecated stages."""

from __future__ import annotations

import contextlib
import io
import logging

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)


def register(
    model_uri: str, name: str, alias: str | None = None, tags: dict[str, str] | None = None
) -> ModelVersion:
    """Register `model_uri` as a new version of `name` and point `alias` at it."""
    # MLflow prints "Successfully registered model ..." straight to stderr; our log line says it.
    with contextlib.redirect_stderr(io.StringIO()):
        version = mlflow.register_model(model_uri, name, tags=tags)
    if alias:
        MlflowClient().set_registered_model_alias(name, alias, version.version)
        log.info("registered %s version %s as @%s", name, version.version, alias)
    else:
        log.info("registered %s version %s", name, version.version)
    return version
