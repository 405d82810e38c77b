"""Batch forecast on a Ray cluster: Ray Data over partitions of series, one model per worker.

Rows are tagged with a partition number hashed from their series id (so each series lands
whole in one partition, wherever its rows were in the input), grouped by it, and every group
goes through `forecast_partition` as a Ray task (the grouping is Ray Data's sort-based shuffle:
see `task_shuffle`). Each worker process loads the registered model
once (`_worker_forecaster` caches it) and reuses it for every partition it gets; tasks rather
than an actor pool because actors would hold every CPU of a small cluster while the shuffle
before them waits for one (a deadlock seen on 2 CPUs). Workers validate and forecast with the
same code as the local engine. The output is a folder of Parquet files, written to a temporary
folder and renamed into place when every partition succeeded.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pds

from forecast.data.staging import fsync_tree, output_error, remove, staging_path, sweep_stale

if TYPE_CHECKING:
    from ray.data import Dataset

    from forecast.data.validation import ColumnSpec
    from forecast.engines.local import StreamSummary
    from forecast.engines.request import BatchRequest
    from forecast.forecaster import Forecaster, Runtime
    from forecast.tracking.resolve import ModelRef

# Ray workers import this module to run `tag_partitions` and `forecast_partition`: the heavy
# imports (torch, MLflow, and Lightning through forecast.data) happen inside the functions that
# need them, so the read and shuffle tasks start in a fraction of the time.

log = logging.getLogger(__name__)

PARTITION = "__forecast_partition"


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise ImportError(
            "engine=ray needs Ray, an optional extra: pip install 'forecast[ray]' (or engine=local)"
        ) from err
    return ray


def tag_partitions(table: pa.Table, id_col: str, partitions: int) -> pa.Table:
    """Add the partition number of every row: a stable hash of its series id."""
    encoded = table.column(id_col).combine_chunks().dictionary_encode()
    keys = np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
    per_key = (pd.util.hash_array(keys) % np.uint64(partitions)).astype(np.int32)  # hash each id once
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    return table.append_column(PARTITION, pa.array(per_key[codes]))


@functools.lru_cache(maxsize=2)
def _worker_forecaster(model_uri: str, tracking_uri: str, runtime: Runtime) -> Forecaster:
    """The model, loaded once per worker process (Ray reuses workers across tasks)."""
    import mlflow

    from forecast.forecaster import Forecaster
    from forecast.tracking.resolve import resolve_model

    mlflow.set_tracking_uri(tracking_uri)
    folder, _ = resolve_model(model_uri)
    return Forecaster.load(folder, runtime=runtime)


def forecast_partition(
    table: pa.Table,
    model_uri: str,
    tracking_uri: str,
    runtime: Runtime,
    batch_size: int,
    metadata: dict[str, str],
    future: object = None,
) -> pa.Table:
    """One partition of whole series in, its forecast out (model metadata in the schema).

    `future`: the future table (`FutureRows`, or a Ray object reference to it): each partition
    takes the rows of its own series.
    """
    from forecast.engines.chunks import chunk_block

    forecaster = _worker_forecaster(model_uri, tracking_uri, runtime)
    if future is not None and not hasattr(future, "for_ids"):
        import ray

        future = ray.get(future)
    c = forecaster.columns
    table = table.drop_columns([PARTITION]).sort_by([(c.id_col, "ascending"), (c.time_col, "ascending")])
    block = chunk_block(table, forecaster, future=future)
    frame = forecaster.forecast_windows(forecaster.scaled_windows(block), batch_size)
    out = pa.Table.from_pandas(frame, preserve_index=False)
    extra = {k.encode(): v.encode() for k, v in metadata.items()}
    return out.replace_schema_metadata({**(out.schema.metadata or {}), **extra})


def _user_error(err: BaseException) -> Exception | None:
    """A ForecastError raised in a Ray task (NaN forecast, bad data), without Ray's wrapping.

    Ray re-raises a task's error as a RayTaskError holding the remote traceback in its text,
    and Ray Data appends its retry advice to the message; the pipeline must end on the task's
    own one-line message and exit code instead.
    """
    from forecast.errors import ForecastError

    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and all(current is not e for e in seen):
        seen.append(current)
        cause = getattr(current, "cause", None)  # RayTaskError keeps the task's exception here
        if isinstance(cause, ForecastError):
            found = cause
        elif isinstance(current, ForecastError) and type(current).__module__.startswith("forecast"):
            found = current
        else:
            current = current.__cause__ or current.__context__
            continue
        if found.args and isinstance(found.args[0], str) and "\nFailed to " in found.args[0]:
            found.args = (found.args[0].split("\nFailed to ")[0], *found.args[1:])
        return found
    return None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def by_partition(
    data: Dataset,
    id_col: str,
    partitions: int,
    fn: Callable[..., pa.Table],
    fn_kwargs: dict,
    workers: int,
    cpus: float,
) -> Dataset:
    """`fn(table, **fn_kwargs)` on each partition of whole series of the Ray dataset `data`, at
    most `workers` at a time (build it under `task_shuffle`: one output block per partition,
    so the partitions run in parallel)."""
    return (
        data.map_batches(
            tag_partitions, fn_kwargs={"id_col": id_col, "partitions": partitions}, batch_format="pyarrow"
        )
        .groupby(PARTITION, num_partitions=partitions)
        .map_groups(fn, fn_kwargs=fn_kwargs, batch_format="pyarrow", concurrency=workers, num_cpus=cpus)
    )


@contextmanager
def task_shuffle() -> Iterator[None]:
    """Ray Data's sort-based, task-only shuffle for the pipelines built inside.

    Ray 2.60's default (hash shuffle, SHUFFLE_V2) starts aggregator actors, new processes, for
    every shuffle: about 4.5 s on 2 CPUs whatever the size, most of a small job's time. Our
    shuffle groups rows by a partition number with few distinct values (one per partition of
    about a million rows), which the pull-based sort shuffle handles in tasks on the workers
    the other stages already use. A Dataset keeps the context it was built under.
    """
    from ray.data import DataContext
    from ray.data.context import ShuffleStrategy

    context = DataContext.get_current()
    before = context.shuffle_strategy
    context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    try:
        yield
    finally:
        context.shuffle_strategy = before


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside `path` that replaces it on success and vanishes on failure.

    Its name (and that of the `.old` folder of the two-rename swap) carries this process's id,
    so a run killed half-way leaves nothing that the next run does not remove; a kill between
    the two renames is undone by the next run, which moves the previous output back
    (`forecast.data.staging.sweep_stale`). OSErrors become an OutputError naming `path`.
    """
    path = Path(path)
    tmp = staging_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path)
    except OSError as err:
        raise output_error(path, err) from err
    try:
        yield tmp
        try:
            fsync_tree(tmp)
            if not path.exists():
                os.rename(tmp, path)
            elif _exchange(tmp, path):
                remove(tmp)  # the old output, now at the temporary name
            else:  # two renames: a reader may briefly find no folder, never a partial one
                old = staging_path(path, ".old")
                os.rename(path, old)
                os.rename(tmp, path)
                remove(old)
        except OSError as err:
            raise output_error(path, err) from err
    finally:
        if os.path.lexists(tmp):
            remove(tmp)


def check_input(
    path: str | os.PathLike, columns: ColumnSpec, forecaster: Forecaster | None = None
) -> tuple[Path, str]:
    """(path, CSV delimiter) of a usable input, before Ray starts: else one error naming the
    file. The input must hold the id, time and target columns, and `forecaster`'s covariate
    columns."""
    from forecast.data.io import check_input as check_path
    from forecast.data.io import csv_delimiter, has_rows, is_parquet, no_rows, table_columns
    from forecast.engines.local import model_columns, require_model_columns

    source = check_path(path)
    sep = "," if is_parquet(source) else csv_delimiter(source)
    available = table_columns(source, sep)
    covariates = [] if forecaster is None else model_columns(forecaster)[3:]
    require_model_columns(available, columns, source, covariates)
    if not has_rows(source, sep):  # also reads every Parquet footer: a truncated file fails here
        raise no_rows(source, available)
    return source, sep


def _read(ray, source: Path, sep: str, names: list[str]):
    """The id, time and target columns of a checked input as a Ray dataset."""
    # Absolute: Ray's tasks run in the cluster's working folder, not the driver's.
    source = source.resolve()
    if source.is_file() and source.suffix.lower() == ".csv":
        import pyarrow.csv

        options = pyarrow.csv.ParseOptions(delimiter=sep)
        return ray.data.read_csv(str(source), parse_options=options).select_columns(names)
    return ray.data.read_parquet(str(source)).select_columns(names)


def forecast_on_ray(request: BatchRequest) -> tuple[StreamSummary, ModelRef]:
    """Forecast every series of the request's input on Ray into the folder `output_path`.

    `as_of` drops the rows after that date (or step) in the workers, before the shuffle (a
    model with future-known covariates and no future table keeps them as future rows, target
    emptied); a strict one refuses observed targets after it before anything is forecast
    (LateRowsError); `metadata` is added to the output files' own. `future`: the future table, read
    here, put in Ray's object store once and joined to each partition's series by id.
    """
    ray = _import_ray()
    import mlflow

    from forecast.asof import (
        AsOf,
        cut_table,
        empty_after,
        late_ids,
        late_rows,
        later_ids,
        no_history,
        warn_cut,
    )
    from forecast.data.io import table_columns
    from forecast.data.validation import validate_long_frame
    from forecast.engines.local import StreamSummary, input_columns
    from forecast.forecaster import Forecaster
    from forecast.tracking.resolve import resolve_model

    started = time.perf_counter()
    input_path, output_path, options = request.input_path, request.output_path, request.ray
    as_of, future, metadata = request.as_of or AsOf(None), request.future, request.metadata
    assert options is not None  # BatchRequest fills in the defaults
    # fail early, here, if it is not a forecast model
    folder, ref = resolve_model(request.model_uri, request.retry)
    loaded = Forecaster.load(folder)
    columns = loaded.columns
    as_of.check(loaded.settings.freq, columns.time_col)
    source, sep = check_input(input_path, columns, loaded)
    names = input_columns(loaded, table_columns(source, sep))  # id, time, target, covariates
    enc = loaded.encoder
    ahead = None
    if future is not None and enc is not None and enc.needs_future:
        from forecast.engines.chunks import FutureRows

        ahead = FutureRows.read(future, loaded)
    keep_after = enc is not None and enc.needs_future and ahead is None
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = dict(options.init_kwargs)
        if options.address is None and options.num_cpus is not None:
            kwargs["num_cpus"] = options.num_cpus
        # "local" always starts a fresh instance: None would join any cluster already on this
        # machine (`ray start` leaves /tmp/ray/ray_current_cluster behind), and refuse num_cpus.
        ray.init(address=options.address or "local", include_dashboard=False, **kwargs)
    try:
        with task_shuffle():
            data = raw = _read(ray, source, sep, names)
            dropped = 0
            cut = raw
            if as_of.value is not None:
                cut = raw.map_batches(
                    cut_table,
                    fn_kwargs={"as_of": as_of, "time_col": columns.time_col},
                    batch_format="pyarrow",
                )
                data = cut
                if keep_after:
                    kwargs = {"as_of": as_of, "time_col": columns.time_col, "target_col": columns.target_col}
                    data = raw.map_batches(empty_after, fn_kwargs=kwargs, batch_format="pyarrow")
            rows = cut.count()
            later = None
            if as_of.value is not None:
                # The ids of the rows after as_of, kept (small): their count and their series in one pass.
                kwargs = {"as_of": as_of, "time_col": columns.time_col, "id_col": columns.id_col}
                later = raw.map_batches(later_ids, fn_kwargs=kwargs, batch_format="pyarrow").materialize()
                dropped = later.count()
                log.info(
                    "as_of=%s: kept %d rows (%s), dropped %d",
                    as_of.label,
                    rows,
                    as_of.describe(columns.time_col),
                    dropped,
                )
            if rows == 0 and dropped:
                raise no_history(as_of, source, _earliest(raw, columns.time_col), columns.time_col)
            if as_of.strict and dropped:  # observed targets after as_of are refused, before any forecast
                kwargs = {"as_of": as_of, "time_col": columns.time_col, "id_col": columns.id_col}
                kwargs["target_col"] = columns.target_col
                late = raw.map_batches(late_ids, fn_kwargs=kwargs, batch_format="pyarrow").materialize()
                n_late = late.count()
                if n_late:
                    raise late_rows(as_of, n_late, late.unique(columns.id_col), columns.time_col)
            if dropped and not keep_after:  # dropped, not kept as future rows: say whose
                warn_cut(as_of, dropped, len(later.unique(columns.id_col)))
            if rows == 0:  # the contract's "no rows" error
                validate_long_frame(pd.DataFrame(columns=names), columns=columns)
            partitions = max(1, math.ceil(rows / options.rows_per_partition))
            cpus = ray.cluster_resources().get("CPU", 1.0)
            workers = options.workers or max(1, min(partitions, int(cpus // options.cpus_per_worker)))
            log.info("ray: %d rows in %d partitions of series over %d workers", rows, partitions, workers)
            kwargs = {
                "model_uri": ref.pinned_uri,
                "tracking_uri": mlflow.get_tracking_uri(),
                "runtime": request.runtime,
                "batch_size": request.batch_size,
                "metadata": {**ref.metadata(), **(metadata or {})},
                "future": None if ahead is None else ray.put(ahead),
            }
            forecasts = by_partition(
                data, columns.id_col, partitions, forecast_partition, kwargs, workers, options.cpus_per_worker
            )
            with atomic_folder(output_path) as tmp:
                try:
                    forecasts.write_parquet(str(Path(tmp).resolve()))  # absolute, as for the input
                except Exception as err:
                    user = _user_error(err)
                    if user is None:
                        raise
                    raise user from err
    finally:
        if started_here:
            ray.shutdown()
    log.info(
        "forecast %d input rows with %s (version %s) on Ray -> %s",
        rows,
        ref.name or request.model_uri,
        ref.version or "-",
        output_path,
    )
    series = pds.dataset(str(output_path), format="parquet").count_rows() // loaded.settings.horizon
    seconds = time.perf_counter() - started
    summary = StreamSummary(Path(output_path), series, rows, partitions, 0, seconds, dropped=dropped)
    return summary, ref


def _earliest(data, time_col: str) -> object:
    """The first time stamp of a Ray dataset, for the message of a cut that left nothing (None if unknown)."""
    try:
        return data.min(time_col)
    except Exception as err:  # a column Ray cannot aggregate (mixed text): the message goes without it
        log.debug("could not find the first time stamp: %s", err)
        return None
