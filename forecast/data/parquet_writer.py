"""A Parquet file written in pieces and put in place only when complete (`AtomicParquetWriter`).

The streamed engine (`forecast.engines.local`) appends each batch of forecasts as it is done, so
the file is written under a temporary name beside the target (`forecast.data.staging`) and
renamed over it at the end: a failed or killed run leaves the previous output as it was.
`forecast.data.io.write_parquet_atomic` does the same for a table held in memory whole.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from forecast.data.staging import fsync_tree, output_error, staging_path, sweep_stale
from forecast.data.validation import DataValidationError


class AtomicParquetWriter:
    """Append tables to a temporary file beside `path`; `commit` renames it into place.

    Until then, and always when anything fails, `path` keeps whatever it held before. The
    temporary name carries this process's id (`forecast.data.staging`), so the next run removes
    it if this one is killed; any error writing is an OutputError naming `path`.
    """

    def __init__(self, path: str | os.PathLike, metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.metadata = {k.encode(): str(v).encode() for k, v in (metadata or {}).items()}
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> AtomicParquetWriter:
        """Sweep leftovers of killed runs, then create this writer's temporary file."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            sweep_stale(self.path)
            tmp = staging_path(self.path)
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except OSError as err:
            raise output_error(self.path, err) from err
        self._tmp = tmp
        return self

    def write(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            schema = table.schema.with_metadata({**(table.schema.metadata or {}), **self.metadata})
            try:
                self._writer = pq.ParquetWriter(self._tmp, schema)
            except OSError as err:
                raise output_error(self.path, err) from err
        elif not table.schema.equals(self._writer.schema, check_metadata=False):
            try:
                table = table.cast(self._writer.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise DataValidationError(
                    f"column types changed between chunks of the input ({table.schema} after "
                    f"{self._writer.schema}); give every chunk the same types"
                ) from err
        try:
            self._writer.write_table(table)
        except OSError as err:  # disk full, file system gone read-only
            raise output_error(self.path, err) from err

    def commit(self) -> Path:
        """Close the temporary file, flush it to disk and rename it over `path`."""
        assert self._writer is not None, "nothing was written"
        try:
            self._writer.close()
            self._writer = None
            fsync_tree(self._tmp)
            os.replace(self._tmp, self.path)
        except OSError as err:
            raise output_error(self.path, err) from err
        self._tmp = None
        return self.path

    def __exit__(self, *exc) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        except OSError:
            pass  # the error that got us here says more
        finally:
            if self._tmp is not None:
                self._tmp.unlink(missing_ok=True)
