"""Talking to an MLflow tracking server over HTTP: its address, MLflow's retry settings, and
what a failed request means (down, refused login, not found).

Shared by training (`forecast.tracking.outage`), the batch job's model loading
(`forecast.tracking.resolve`) and the sync tool. No Lightning or torch here: the batch path and
Ray workers import it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

from forecast.errors import TrackingUnavailableError

RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
BACKOFF_ENV = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
JITTER_ENV = "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"
# For the rest of a process that trains against a server (publishing the model, registering it),
# unless the user set them: about 30 s of retries instead of MLflow's 4 minutes.
PROCESS_DEFAULTS = {RETRIES_ENV: "3", TIMEOUT_ENV: "30", BACKOFF_ENV: "2"}
OFFLINE_HINT = "train without it with logger.offline=true and sync later (docs/tracking.md)"


class TrackingAuthError(TrackingUnavailableError):
    """The tracking server refused the credentials: same exit code, a message that says which vars."""


def is_remote(uri: str | None) -> bool:
    """Whether `uri` is a tracking server reached over HTTP (not a local SQLite or file store)."""
    return bool(uri) and uri.split(":", 1)[0].lower() in ("http", "https")


def server_name(uri: str) -> str:
    """The URI without a user:password part, safe to print."""
    parts = urlsplit(uri)
    if not (parts.username or parts.password):
        return uri  # as given: a round trip would turn sqlite:////abs/path into sqlite://abs/path
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))


@contextmanager
def http_policy(timeout: float, retries: int, backoff: float = 1, keep_user: bool = False) -> Iterator[None]:
    """MLflow's HTTP retries and timeout for the requests made inside (it reads them per request).

    `keep_user`: a variable the user set stays as it is (the batch job's model loading, which
    retries on its own terms, turns MLflow's retries off only when nobody chose them).
    """
    values = {
        RETRIES_ENV: str(int(retries)),
        TIMEOUT_ENV: str(max(1, round(timeout))),
        BACKOFF_ENV: str(int(backoff)),
        JITTER_ENV: "0.5",
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update({k: v for k, v in values.items() if not (keep_user and saved[k] is not None)})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def apply_process_defaults() -> None:
    """Bound later requests of this process (publish, register) unless the user chose values."""
    for name, value in PROCESS_DEFAULTS.items():
        os.environ.setdefault(name, value)


def http_status(err: BaseException) -> int | None:
    """The HTTP status an MLflow error stands for, when it carries one."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        match = re.search(r"error code (\d{3}) != 200", str(err))
        return int(match.group(1)) if match else err.get_http_status_code()
    return None


def is_outage(err: BaseException) -> bool:
    """A request that failed because of the server or the network, not because it was wrong."""
    import requests

    if isinstance(err, requests.RequestException | ConnectionError | TimeoutError):
        return True
    status = http_status(err)
    return status is not None and (status >= 500 or status in (401, 403, 408, 429))


_REASONS = (
    ("connection refused", ("Connection refused", "Errno 111")),
    ("unknown host", ("Name or service not known", "nodename nor", "name resolution", "getaddrinfo")),
    ("no answer in time", ("timed out", "Timeout", "timeout")),
    ("connection dropped", ("Connection aborted", "Connection reset", "RemoteDisconnected", "closed conn")),
    ("TLS error", ("SSLError", "CERTIFICATE_VERIFY_FAILED")),
)


def reason(err: BaseException) -> str:
    """What went wrong with a request, in a few words."""
    text = str(err)
    for short, needles in _REASONS:
        if any(needle in text for needle in needles):
            return short
    many = re.search(r"too many (\d{3}) error responses", text)
    if many:
        return f"HTTP {many.group(1)}"
    status = http_status(err)
    if status is not None and status != 500:
        return f"HTTP {status}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:200]


def auth_error(uri: str, status: int) -> TrackingAuthError:
    """The one line for a refused login: which variables to check (never their values)."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if status == 401 and not user:
        what = "requires a login: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    elif status == 401:
        what = (
            f"rejected the credentials of user {user!r} (HTTP 401): check MLFLOW_TRACKING_USERNAME "
            "and MLFLOW_TRACKING_PASSWORD"
        )
    else:
        what = f"denied user {user!r} access (HTTP 403): ask its admin for permission"
    return TrackingAuthError(f"MLflow tracking server {server_name(uri)} {what}")


def error_chain(err: BaseException) -> list[BaseException]:
    """`err` and the exceptions behind it (MLflow re-raises connection errors without `from`)."""
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and all(current is not e for e in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def connection_problem(err: BaseException, timeout_s: float) -> str | None:
    """Why the tracking server could not be reached, or None if it answered."""
    import socket

    from requests import exceptions as http

    chain = error_chain(err)
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if any(isinstance(e, http.Timeout | TimeoutError | socket.timeout) for e in chain):
        return f"no answer within {timeout_s}s"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "unknown host"
    if any(isinstance(e, http.RetryError) for e in chain):
        return "the server answered with an error status (e.g. 503)"
    if any(isinstance(e, http.ConnectionError | ConnectionError) for e in chain):
        return "connection failed"
    return None


def refused_login(err: BaseException) -> int | None:
    """401 or 403 when the tracking server turned the credentials down, else None."""
    from mlflow.exceptions import MlflowException

    for e in error_chain(err):
        if not isinstance(e, MlflowException):
            continue
        match = re.search(r"error code (\d{3}) != 200", str(e))  # a non-JSON answer (basic-auth app)
        status = int(match.group(1)) if match else None
        if status in (401, 403):
            return status
        if e.error_code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            return 401 if e.error_code == "UNAUTHENTICATED" else 403
    return None


HEALTH_TIMEOUT = (5.0, 10.0)  # connect, read: /health is cheap even on a busy server
HEALTH_ATTEMPTS = 2


def health_problem(uri: str, timeout: tuple[float, float] | None = None) -> BaseException | None:
    """None when the server answers its (unauthenticated) health check, else what went wrong.

    A 401/403/404 there (a proxy guarding it, a path prefix) is left to the MLflow request
    that follows; only no answer at all, or a 5xx, counts as down.
    """
    import requests

    verify: bool | str = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true"):
        verify = False
    try:
        response = requests.get(f"{uri.rstrip('/')}/health", timeout=timeout or HEALTH_TIMEOUT, verify=verify)
    except requests.RequestException as err:
        return err
    return requests.HTTPError(f"HTTP {response.status_code}") if response.status_code >= 500 else None


def check_server(uri: str, timeout: float = 30, retries: int = 1) -> None:
    """Fail in seconds, naming the server and the way out, when a tracking server cannot be used.

    First its health check (`HEALTH_ATTEMPTS` tries of at most 5 s to connect and 10 s to
    answer: a server that is down fails here at once), then one authenticated MLflow request
    with `timeout` and `retries`, so wrong credentials are caught too. A local store is not
    checked.
    """
    if not is_remote(uri):
        return
    from mlflow import MlflowClient

    started = time.monotonic()
    for attempt in range(HEALTH_ATTEMPTS):
        problem = health_problem(uri)
        if problem is None:
            break
        if attempt + 1 < HEALTH_ATTEMPTS:
            time.sleep(1)
    else:
        elapsed = time.monotonic() - started
        raise _unreachable(uri, problem, f"{HEALTH_ATTEMPTS} attempts in {elapsed:.0f} s") from problem
    try:
        with http_policy(timeout, retries):
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:
        status = http_status(err)
        if status in (401, 403):
            raise auth_error(uri, status) from err
        if not is_outage(err) and status is None:
            raise
        raise _unreachable(uri, err, f"{retries + 1} attempts in {time.monotonic() - started:.0f} s") from err


def _unreachable(uri: str, err: BaseException, attempts: str) -> TrackingUnavailableError:
    """The one-line error for a server that does not answer."""
    return TrackingUnavailableError(
        f"MLflow tracking server {server_name(uri)} is unreachable ({reason(err)}; {attempts}): "
        f"start it or fix MLFLOW_TRACKING_URI, or {OFFLINE_HINT}"
    )
