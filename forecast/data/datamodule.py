"""LightningDataModule: read, validate, split by time, scale, and serve windows."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from forecast.config import DataConfig
from forecast.data.calendar import fixed_step, season_length_for, step_index
from forecast.data.covariate_encoder import CovariateEncoder
from forecast.data.covariates import CovariateConfig, read_static_table, validate_covariates
from forecast.data.io import TRAIN_COLUMNS_HINT, check_input, is_parquet, read_table
from forecast.data.scaling import SeriesScaler, segment_stats
from forecast.data.sharding import ShardSampler, shard_bounds
from forecast.data.splits import seasonal_mae, split_points
from forecast.data.store import AUTO_ROWS, MappedSeries, StoreOptions, open_store, parquet_rows, reopen
from forecast.data.validation import (
    ColumnSpec,
    _examples,
    series_breaks,
    validate_long_frame,
)
from forecast.data.windows import (
    SeriesArrays,
    WindowDataset,
    WindowIndex,
    collate_batch,
    window_starts,
)
from forecast.datasets import load_dataset
from forecast.errors import ConfigError, DataValidationError, require_int

log = logging.getLogger(__name__)


class SeriesDataModule(L.LightningDataModule):
    """Long table in, training/validation/test windows out.

    Per series, the last `test_size` steps are test targets and the `val_size` before them
    validation targets; everything earlier trains. Scaling statistics come from the training
    part only.

    Covariates (`futr_exog`, `hist_exog`, `static`, `categorical`, `calendar`, docs/data.md):
    checked once with the table, encoded with statistics of the training rows (`covariates`,
    saved with the model) and stored once per row or series beside the values.
    """

    def __init__(self, frame: pd.DataFrame | None = None, **options: Any) -> None:
        """`options`: `forecast.config.DataConfig`'s; `frame`: a table in memory instead of a file."""
        super().__init__()
        config = DataConfig.parse(options)
        self.config = config
        c = config
        sources = [s for s in (c.path, c.dataset, frame) if s is not None]
        if len(sources) != 1:
            raise ConfigError("give exactly one of data.path, data.dataset or a frame")
        input_size, horizon = (
            require_int("data.input_size", c.input_size),
            require_int("data.horizon", c.horizon),
        )
        val_size = None if c.val_size is None else require_int("data.val_size", c.val_size)
        test_size = None if c.test_size is None else require_int("data.test_size", c.test_size, minimum=0)
        # null: the frequency's own period (hourly 24, daily 7, ...), known after setup()
        season_length = (
            None if c.season_length is None else require_int("data.season_length", c.season_length)
        )
        train_stride = require_int("data.train_stride", c.train_stride)
        batch_size = require_int("data.batch_size", c.batch_size)
        eval_batch_size = require_int("data.eval_batch_size", c.eval_batch_size)
        num_workers = require_int("data.num_workers", c.num_workers, minimum=0)
        scaler, missing, empty_series, padded_windows = c.scaler, c.missing, c.empty_series, c.padded_windows
        if scaler not in ("standard", "robust", "minmax", "none"):
            raise ConfigError(f"data.scaler must be standard, robust, minmax or none, got {scaler!r}")
        if missing not in ("error", "mask"):
            raise ConfigError(f"data.missing must be 'error' or 'mask', got {missing!r}")
        self.save_hyperparameters(config.to_dict(), logger=False)
        path, dataset, freq = c.path, c.dataset, c.freq
        id_col, time_col, target_col = c.id_col, c.time_col, c.target_col
        futr_exog, hist_exog, static, static_path = c.futr_exog, c.hist_exog, c.static, c.static_path
        categorical, calendar = c.categorical, c.calendar
        self.source = path or dataset
        self._frame = frame
        self.columns = ColumnSpec(id_col, time_col, target_col)
        self.covariate_config = CovariateConfig(
            futr=futr_exog,
            hist=hist_exog,
            static=static,
            categorical=categorical,
            calendar=calendar,
            static_path=static_path,
            reserved=(id_col, time_col, target_col),
        )
        # fitted on the training rows in setup(); None when no covariate is declared
        self.covariates: CovariateEncoder | None = None
        # an encoder to use instead of fitting one (a warm start keeps its parent's vocabularies,
        # so the net's embeddings keep their sizes and meaning): set before setup()
        self.fitted_covariates: CovariateEncoder | None = None
        self.freq = freq
        self.input_size = input_size
        self.horizon = horizon
        self.val_size = horizon if val_size is None else val_size
        self.test_size = horizon if test_size is None else test_size
        if self.val_size < horizon or (self.test_size and self.test_size < horizon):
            raise ConfigError(
                f"data.val_size must be at least data.horizon ({horizon}), and test_size too unless 0 "
                f"(no test split); got {self.val_size} and {self.test_size}"
            )
        self.season_length = season_length
        self.scaler_kind = scaler
        self.missing = missing
        if empty_series not in ("error", "drop"):
            raise ConfigError(f"data.empty_series must be 'error' or 'drop', got {empty_series!r}")
        self.empty_series = empty_series
        if padded_windows not in ("short", "all"):
            raise ConfigError(f"data.padded_windows must be 'short' or 'all', got {padded_windows!r}")
        self.padded_windows = padded_windows
        if c.store not in ("auto", "memory", "mapped"):
            raise ConfigError(f"data.store must be auto, memory or mapped, got {c.store!r}")
        self.store = c.store
        self.cache_dir = c.cache_dir
        self.mapped: MappedSeries | None = None  # the memory-mapped store, when training reads one
        self._shard: tuple | None = None  # (rank, world, datasets) of this DDP rank's share
        # Training draws of a mapped store: from the seed set before the data module
        # (seed_everything); an ensemble sets each member's, as the in-memory shuffle follows it.
        self.sampler_seed = int(torch.initial_seed() % 2**31)
        self.train_stride = train_stride
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.data_freq: str | int | None = None  # the frequency, given or inferred (after setup)
        self.first_time: pd.Index | None = None  # (n_series,) each series' first time stamp
        self.scaler: SeriesScaler | None = None
        self.arrays: SeriesArrays | None = None
        self.ids: np.ndarray | None = None
        # (n_series,) where each series' validation and test targets start (its length if none)
        self.val_start: np.ndarray | None = None
        self.test_start: np.ndarray | None = None
        self.left_out: tuple = ()  # series too short for one training window (not trained on)
        self.datasets: dict[str, WindowDataset] = {}
        self._static_table: pd.DataFrame | None = None  # data.static_path, read in setup()

    def _read(self) -> pd.DataFrame:
        """The table; a file's problems (path, columns) surface here, naming the file."""
        if self._frame is not None:
            return self._frame
        if self.hparams.dataset is not None:
            return load_dataset(self.hparams.dataset)
        c = self.columns
        covariates = list(self.covariate_config.columns)
        hint = TRAIN_COLUMNS_HINT
        if covariates:
            hint += (
                f" Covariates {covariates}: fix data.futr_exog / data.hist_exog / data.static or add them."
            )
        wanted = [c.id_col, c.time_col, c.target_col, *covariates]
        return read_table(self.hparams.path, columns=wanted, hint=hint, only=True)

    def setup(self, stage: str | None = None) -> None:
        """Validate once and build the window index; later calls are no-ops."""
        if self.arrays is not None:
            return
        if self._use_store():
            offsets, val_start, test_start = self._setup_mapped()
        else:
            offsets, val_start, test_start = self._setup_in_memory()
        self._build_windows(offsets, val_start, test_start)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for another process (trainer=ray sends the set-up data module to its workers):
        a mapped store's values travel as the store's folder and are mapped again there, not as
        gigabytes of bytes. The folder must be reachable from the workers (`data.cache_dir` on a
        shared file system when they run on other machines)."""
        state = self.__dict__.copy()
        if self.mapped is not None and self.arrays is not None:
            state["mapped"] = dataclasses.replace(self.mapped, values=np.zeros(0, np.float32))
            state["arrays"] = dataclasses.replace(self.arrays, values=np.zeros(0, np.float32))
            state["datasets"], state["_shard"] = {}, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.mapped is not None and self.arrays is not None:
            self.mapped = reopen(self.mapped)
            self.arrays = dataclasses.replace(self.arrays, values=self.mapped.values)
            assert self.val_start is not None and self.test_start is not None
            self.datasets = self._window_datasets(self.arrays, self.val_start, self.test_start)

    def _use_store(self) -> bool:
        """Whether training reads a memory-mapped store (`data.store`, forecast.data.store)."""
        path = self.hparams.path
        if self.store == "memory" or (self.store == "auto" and (path is None or self._frame is not None)):
            return False
        if path is None or self._frame is not None:
            raise ConfigError(
                "data.store=mapped reads data.path (a Parquet file or folder), not an embedded dataset "
                "or a table in memory; set data.store=memory or auto"
            )
        checked = check_input(path)
        parquet = is_parquet(checked)
        if self.store == "auto":
            return parquet and self.covariate_config.empty and parquet_rows(checked) > AUTO_ROWS
        if not parquet:
            raise ConfigError(
                f"data.store=mapped reads Parquet, and {path} is not: convert it (pandas.read_csv(...)"
                ".to_parquet(...)) or set data.store=memory"
            )
        if not self.covariate_config.empty:
            raise ConfigError(
                "data.store=mapped stores the target only, and covariates are declared "
                f"({list(self.covariate_config.columns)}): set data.store=memory"
            )
        return True

    def _setup_mapped(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Open (or build) the memory-mapped store: the values stay on disk, mapped."""
        options = StoreOptions(
            columns=self.columns,
            freq=self.freq,
            missing=self.missing,
            empty_series=self.empty_series,
            horizon=self.horizon,
            val_size=self.val_size,
            test_size=self.test_size,
            scaler=self.scaler_kind,
            season_length=self.season_length,
        )
        store = self.mapped = open_store(self.hparams.path, options, self.cache_dir)
        if store.left_out:
            self.left_out = store.left_out
            log.warning(
                "left %d of %d series out of training: fewer than horizon + 1 = %d steps, no training "
                "window (%s)",
                len(store.left_out),
                len(store.ids) + len(store.left_out),
                self.horizon + 1,
                _examples(store.left_out),
            )
        self.data_freq, self.season_length = store.freq, store.season_length
        self.ids, self.first_time, offsets = store.ids, store.first_time, store.offsets
        n = np.diff(offsets)
        val_start, test_start = split_points(n, self.horizon, self.val_size, self.test_size)
        self._require_eval_windows(n, val_start, test_start)
        self.val_start, self.test_start = val_start, test_start
        stats = pd.DataFrame(
            {"loc": store.loc, "scale": store.scale}, index=pd.Index(self.ids, name="unique_id")
        )
        self.scaler = SeriesScaler(kind=self.scaler_kind, stats=stats.astype("float32"))
        self.arrays = SeriesArrays(
            values=store.values,
            offsets=offsets,
            loc=store.loc,
            scale=store.scale,
            mase_scale=store.mase_scale,
            first_step=self._first_steps(self.first_time.to_numpy()),
            codes=self.scaler.codes(self.ids),
        )
        return offsets, val_start, test_start

    def _setup_in_memory(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read and validate the whole table, keep its values in memory."""
        validated = validate_long_frame(
            self._read(),
            columns=self.columns,
            freq=self.freq,
            missing=self.missing,
            empty_series=self.empty_series,
        )
        cov = self.covariate_config
        if not cov.empty:
            self._static_table = (
                read_static_table(cov.static_path, self.columns.id_col, cov.static)
                if cov.static_path
                else None
            )
            validate_covariates(validated.frame, cov, self.columns, self.missing, self._static_table)
        # Only the target values and each series' first time stamp are kept: the validated
        # table (ids, times, carried columns) is several times the size of the values, and
        # `history()` rebuilds what it needs from these.
        frame, c = validated.frame, self.columns
        self.data_freq = validated.freq
        if self.season_length is None:
            self.season_length = season_length_for(self.data_freq)
            log.info(
                "data.season_length not set: %d from the frequency %r", self.season_length, self.data_freq
            )
        # Series boundaries from the sorted id column, without a groupby over every row.
        starts = np.concatenate([[0], np.flatnonzero(series_breaks(frame[c.id_col])) + 1])
        n = np.diff(np.append(starts, len(frame)))
        frame, n = self._leave_out_too_short(frame, n)
        self.ids = frame[c.id_col].iloc[np.cumsum(n) - n].to_numpy()
        offsets = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
        val_start, test_start = split_points(n, self.horizon, self.val_size, self.test_size)
        self._require_eval_windows(n, val_start, test_start)
        self.val_start, self.test_start = val_start, test_start
        self.first_time = pd.Index(frame[c.time_col].iloc[offsets[:-1]])

        raw = frame[c.target_col].to_numpy(dtype=np.float32)
        # Statistics of each series' training rows [offset, offset + val_start) by segment sums
        # over the values in place: a pandas groupby over 100M rows took gigabytes of temporaries.
        loc, scale = segment_stats(raw, offsets[:-1], offsets[:-1] + val_start, self.scaler_kind)
        stats = pd.DataFrame({"loc": loc, "scale": scale}, index=pd.Index(self.ids, name="unique_id"))
        self.scaler = SeriesScaler(kind=self.scaler_kind, stats=stats.astype("float32"))
        covariates = self._encode_covariates(frame, offsets, val_start)
        self.arrays = SeriesArrays(
            values=raw,
            offsets=offsets,
            loc=loc,
            scale=scale,
            mase_scale=seasonal_mae(raw, offsets, val_start, self.season_length),
            first_step=self._first_steps(self.first_time.to_numpy()),
            codes=self.scaler.codes(self.ids),
            **covariates,
        )
        del validated, frame, covariates
        # Arrow's allocator keeps freed pages of the table it read (gigabytes at 100M rows);
        # hand them back so the process holds what the data module holds.
        pa.default_memory_pool().release_unused()
        return offsets, val_start, test_start

    def _build_windows(self, offsets: np.ndarray, val_start: np.ndarray, test_start: np.ndarray) -> None:
        """The training, validation and test windows of every series."""
        n = np.diff(offsets)
        L, H = self.input_size, self.horizon
        assert self.arrays is not None
        self.datasets = self._window_datasets(self.arrays, val_start, test_start)
        full = val_start >= L + H
        log.info(
            "data: %d series, %d steps; windows train %d, val %d, test %d; %d series shorter than "
            "input_size + horizon train on padded inputs, %d have no validation part, %d no test part",
            len(n),
            offsets[-1],
            *(len(self.datasets[s]) for s in ("train", "val", "test")),
            int((~full).sum()),
            int((test_start - val_start < H).sum()),
            int((n - test_start < H).sum()) if self.test_size else 0,
        )

    def _window_datasets(
        self, arrays: SeriesArrays, val_start: np.ndarray, test_start: np.ndarray
    ) -> dict[str, WindowDataset]:
        """train/val/test windows over `arrays` (all series, or one DDP rank's share)."""
        offsets, n = arrays.offsets, arrays.lengths
        L, H = self.input_size, self.horizon
        datasets = {}
        # Series with a full input before their validation part keep exactly the windows they
        # always had (first target at step L), so results on data of long series do not move.
        # A series too short for that trains on every window with at least one observed input
        # step (first target 1 .. T - H of its T training steps), the rest of the input padded
        # and masked: these are the only examples of forecasting from a short history, which is
        # what the forecast of a young series does, and with fewer than L of them a short series
        # still weighs less than a long one. padded_windows=all gives every series those start
        # windows (its first L - 1 targets from a padded input, as neuralforecast trains): the
        # net then learns short inputs of every length, which the forecast of a series shorter
        # than L needs when the short series themselves are too short to teach it.
        full = val_start >= L + H
        start_at_one = ~full if self.padded_windows == "short" else np.ones_like(full)
        splits = {
            "train": (np.where(start_at_one, 1, L), val_start, self.train_stride),
            "val": (val_start, test_start, 1),
            "test": (test_start, n, 1),
        }
        for name, (first, last, stride) in splits.items():
            # A mapped store's windows are counted per series, not listed (forecast.data.windows).
            index = WindowIndex if self.mapped is not None else window_starts
            starts = index(offsets, first, last, L, H, stride)
            padded = bool(np.any((first < L) & (last - first >= H)))
            datasets[name] = WindowDataset(arrays, starts, L, H, padded=padded)
        return datasets

    def _encode_covariates(self, frame: pd.DataFrame, offsets: np.ndarray, val_start: np.ndarray) -> dict:
        """SeriesArrays' covariate fields: the encoder fitted on each series' training rows (those
        before its validation part), then every row and series encoded once."""
        cov = self.covariate_config
        if cov.empty:
            return {}
        n = np.diff(offsets)
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], n)  # each row's step in its series
        train_rows = within < np.repeat(val_start, n)
        c, static_table = self.columns, self._static_table
        self.covariates = self.fitted_covariates or CovariateEncoder.fit(
            frame, cov, train_rows, static_table, id_col=c.id_col
        )
        encoded = self.covariates.encode_rows(frame, c.time_col, self.data_freq)
        static_source = frame if static_table is None else static_table
        encoded.update(self.covariates.encode_static(static_source, self.ids, c.id_col))
        self._static_table = None  # encoded: the table itself is not needed any more
        # codes stored as int32 (half the memory), served as int64
        return {k: v.astype(np.int32) if k.endswith("_cat") else v for k, v in encoded.items()}

    def _leave_out_too_short(self, frame: pd.DataFrame, n: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
        """Drop series with fewer than horizon + 1 steps (no training window), logging how many."""
        short = n < self.horizon + 1
        if not short.any():
            return frame, n
        c = self.columns
        ids = frame[c.id_col].iloc[(np.cumsum(n) - n)[short]].to_numpy()
        if short.all():
            raise DataValidationError(
                f"no series has the horizon + 1 = {self.horizon + 1} steps one training window "
                f"needs (the longest has {n.max()}): lower data.horizon or bring longer series"
            )
        self.left_out = tuple(ids)
        log.warning(
            "left %d of %d series out of training: fewer than horizon + 1 = %d steps, no training "
            "window (%s)",
            len(ids),
            len(n),
            self.horizon + 1,
            _examples(ids),
        )
        return frame[np.repeat(~short, n)].reset_index(drop=True), n[~short]

    def _require_eval_windows(self, n: np.ndarray, val_start: np.ndarray, test_start: np.ndarray) -> None:
        """Validation (and test, unless test_size=0) needs at least one series long enough."""
        H, v, t = self.horizon, self.val_size, self.test_size
        if not (test_start - val_start >= H).any():
            raise DataValidationError(
                f"no series is long enough for a validation part: that takes horizon + 1 + val_size "
                f"= {H + 1 + v} steps (the longest has {n.max()}); lower data.val_size or data.horizon"
            )
        if t and not (n - test_start >= H).any():
            raise DataValidationError(
                f"no series is long enough for a test part: that takes horizon + 1 + val_size + "
                f"test_size = {H + 1 + v + t} steps (the longest has {n.max()}); lower "
                "data.test_size, or set data.test_size=0 for no test split"
            )

    def _first_steps(self, first_times: np.ndarray) -> np.ndarray | None:
        """Absolute step number of every series' first row, for models with a learned cycle."""
        try:
            return step_index(first_times, self.data_freq)
        except ValueError as err:  # only a learned cycle needs them; it then says so
            log.debug("no step numbers for this frequency: %s", err)
            return None

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        """On the CPU the loader's tensors are where they must be: Lightning's walk over the batch
        (to move each tensor) is skipped, a few percent of a training step there."""
        if device.type == "cpu":
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    @property
    def n_series(self) -> int:
        """How many series the model trains on (sizes per-series parameters); after setup()."""
        assert self.scaler is not None, "call setup() first"
        return len(self.scaler.stats)

    def model_sizes(self) -> dict[str, Any]:
        """What `ForecastModule` needs from the data beside its options, after setup(): the
        covariates' input widths and vocabularies, and the series count (for per-series cycles):
        `ForecastModule(**options, **dm.model_sizes())`."""
        dims = None if self.covariates is None else self.covariates.dims
        return {"covariates": dims, "n_series": self.n_series}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset, sampler = self.datasets[split], None
        trainer = self.trainer
        world = trainer.world_size if trainer is not None else 1
        if self.mapped is not None:
            # A mapped store: each rank its own series (forecast.data.sharding); training draws
            # with replacement (no permutation of every window), evaluation scores each once.
            rank = trainer.global_rank if trainer is not None else 0
            total = len(dataset)
            if world > 1:
                dataset = self.shard(rank, world)[split]
            length = -(-total // world) if split == "train" else len(dataset)
            sampler = ShardSampler(dataset, length, shuffle, self.sampler_seed, rank, world)
        elif split != "train" and world > 1:
            # Lightning's default DistributedSampler pads ranks to equal length, scoring some
            # windows twice; this one gives every window to exactly one rank.
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=world, rank=trainer.global_rank, shuffle=False
            )
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle and sampler is None,
            num_workers=self.num_workers,
            collate_fn=collate_batch,
            persistent_workers=self.num_workers > 0,
        )

    def shard(self, rank: int, world: int) -> dict[str, WindowDataset]:
        """This DDP rank's train/val/test windows over its own series of the mapped store, whose
        values it alone maps (`forecast.data.sharding`); built once per rank."""
        if self._shard is not None and self._shard[:2] == (rank, world):
            return self._shard[2]
        assert self.mapped is not None and self.arrays is not None
        a, train = self.arrays, self.datasets["train"].starts
        bounds = shard_bounds(np.diff(train.cum), world)
        lo, hi = int(bounds[rank]), int(bounds[rank + 1])
        offsets = a.offsets[lo : hi + 1]
        arrays = SeriesArrays(
            values=self.mapped.values_of(int(offsets[0]), int(offsets[-1])),
            offsets=offsets - offsets[0],
            loc=a.loc[lo:hi],
            scale=a.scale[lo:hi],
            mase_scale=a.mase_scale[lo:hi],
            first_step=None if a.first_step is None else a.first_step[lo:hi],
            codes=None if a.codes is None else a.codes[lo:hi],
        )
        assert self.val_start is not None and self.test_start is not None
        datasets = self._window_datasets(arrays, self.val_start[lo:hi], self.test_start[lo:hi])
        log.info(
            "rank %d of %d: series %d to %d (%d steps), %d training windows",
            rank,
            world,
            lo,
            hi - 1,
            offsets[-1] - offsets[0],
            len(datasets["train"]),
        )
        self._shard = (rank, world, datasets)
        return datasets

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def history(
        self, before: str | None = "test", ids: Sequence | None = None, future: bool = False
    ) -> pd.DataFrame:
        """The data (id, time, target) cut before the `test` or `val` targets (None: all of it),
        for every series or only `ids`: what a forecast at that point sees. A series without
        that part (too short for it, see `split_points`) comes whole.

        Rebuilt from the stored values and each series' first time stamp, in the validated
        table's order and dtypes (other columns of the input are not kept). With covariates,
        their columns follow (future-known, past-only, then static ones, also those read from a
        static table, repeated on every row), rebuilt from the encoded values: numeric ones up
        to float32 rounding, categorical ones as their labels (strings; a category unseen in
        training, or missing, comes back empty), so that they encode to what the model trained on.
        `future=True` adds, for a model with future-known covariates, each series' next
        `horizon` rows after the cut (target and past-only columns empty), as a forecast input
        carries them; only as many as the data has (none with before=None).
        """
        assert self.arrays is not None and self.ids is not None, "call setup() first"
        a, c = self.arrays, self.columns
        pick = np.arange(len(self.ids)) if ids is None else pd.Index(self.ids).get_indexer(list(ids))
        if (pick < 0).any():
            raise KeyError(f"unknown series: {list(np.asarray(list(ids))[pick < 0])[:5]}")
        ends = {None: a.lengths, "test": self.test_start, "val": self.val_start}
        if before not in ends:
            raise ValueError(f"before must be 'test', 'val' or None, got {before!r}")
        lengths = ends[before][pick]
        ahead = np.zeros_like(lengths)
        if future and self.covariates is not None and self.covariates.needs_future:
            ahead = np.minimum(self.horizon, a.lengths[pick] - lengths)
        total = lengths + ahead
        first = a.offsets[pick]
        within = np.arange(total.sum()) - np.repeat(np.cumsum(total) - total, total)
        rows = np.repeat(first, total) + within
        values = a.values[rows]
        if ahead.any():
            is_future = within >= np.repeat(lengths, total)
            values[is_future] = np.nan
        frame = pd.DataFrame(
            {
                c.id_col: np.repeat(self.ids[pick], total),
                c.time_col: series_times(self.first_time[pick], total, self.data_freq),
                c.target_col: values,
            }
        )
        if self.covariates is not None:
            frame = self._decoded_covariates(frame, rows, np.repeat(pick, total))
            if ahead.any():
                hist = self.covariates.hist_num + self.covariates.hist_cat
                frame.loc[is_future, hist] = None
        return frame

    def _decoded_covariates(self, frame: pd.DataFrame, rows: np.ndarray, series: np.ndarray) -> pd.DataFrame:
        """`frame` with the covariate columns of `rows` (global rows; series: each row's series)
        rebuilt from the stored encodings (see `history`)."""
        enc, a = self.covariates, self.arrays
        assert enc is not None and a is not None
        columns = {}
        kinds = [("futr", enc.futr_num, a.futr, rows), ("futr_cat", enc.futr_cat, a.futr_cat, rows)]
        kinds += [("hist", enc.hist_num, a.hist, rows), ("hist_cat", enc.hist_cat, a.hist_cat, rows)]
        kinds += [
            ("static", enc.static_num, a.static, series),
            ("static_cat", enc.static_cat, a.static_cat, series),
        ]
        for kind, names, stored, where in kinds:
            for j, name in enumerate(names):  # numeric futr columns come before the calendar's
                encoded = stored[where, j]
                columns[name] = (
                    enc.decode_codes(name, encoded)
                    if kind.endswith("_cat")
                    else enc.decode_numeric(name, encoded)
                )
        names = list(dict.fromkeys(enc.table_columns + enc.static_columns))  # a static table's too
        extra = pd.DataFrame({name: columns[name] for name in names}, index=frame.index)
        return pd.concat([frame, extra], axis=1)


def series_times(first: pd.Index, lengths: np.ndarray, freq: str | int) -> pd.Index:
    """Regular time stamps: `lengths[i]` steps of `freq` from `first[i]`, series after series."""
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    if isinstance(freq, int):
        return pd.Index(first.to_numpy().astype(np.int64).repeat(lengths) + within * freq)
    step_ns = fixed_step(freq)
    if step_ns is None:  # calendar steps (month ends, weeks): pandas places each one
        offset = pd.tseries.frequencies.to_offset(freq)
        parts = [pd.date_range(t, periods=k, freq=offset) for t, k in zip(first, lengths, strict=True)]
        return parts[0].append(parts[1:]) if parts else pd.DatetimeIndex([])
    return first.repeat(lengths) + pd.to_timedelta(within * step_ns, unit="ns")
