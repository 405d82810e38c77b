"""Training aids: per-parameter gradient norms in MLflow, the learning-rate finder (`tune_lr`), and
the sweep's search space over cells, layers, sizes, learning rate and batch size."""

from __future__ import annotations

import math

import lightning as L
import pytest
from hydra.utils import instantiate
from lightning.pytorch.loggers import MLFlowLogger
from mlflow import MlflowClient
from omegaconf import open_dict
from optuna.distributions import CategoricalDistribution
from pipeline_helpers import TINY_TRAIN
from test_configs import compose_train

from forecast.callbacks import GradNormLogger
from forecast.data import SeriesDataModule
from forecast.data.synthetic import synthetic_long
from forecast.errors import ConfigError
from forecast.models import ForecastModule
from forecast.training import fit
from hydra_plugins.forecast_optuna_sweeper._search_space import parse_search_space

# 6 hourly series of 200 steps, 16 windows a batch: about 60 training batches. The finder tries
# STEPS rates (Lightning's default is 100) within the one epoch, and then trains it.
STEPS = 30
TINY = [
    *(o for o in TINY_TRAIN if not o.startswith(("trainer.max_epochs=", "trainer.limit_train_batches="))),
    "trainer.max_epochs=1",
    f"trainer.limit_train_batches={STEPS}",
    "+trainer.limit_val_batches=2",
    "intervals=[]",
]


def test_grad_norms_reach_mlflow_per_parameter_at_the_steps_measured(tmp_path, isolated_mlflow, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dm = SeriesDataModule(
        frame=synthetic_long(n_series=6, length=200, seed=1),
        freq="h",
        input_size=24,
        horizon=6,
        batch_size=16,
    )
    module = ForecastModule(24, 6, hidden_size=16, head_hidden=16, num_layers=2, segment_len=6)
    logger = MLFlowLogger(experiment_name="grad-norms", tracking_uri=isolated_mlflow)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=6,
        limit_val_batches=1,
        log_every_n_steps=50,  # Lightning's own flush never comes: the norms must not wait for it
        gradient_clip_val=1e-6,  # clipping to almost nothing: the norms are measured before it
        logger=logger,
        callbacks=[GradNormLogger(every_n_steps=2)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)

    client = MlflowClient(isolated_mlflow)
    metrics = client.get_run(logger.run_id).data.metrics
    norms = {k: v for k, v in metrics.items() if k.startswith("grad_norm/")}
    layers = {k.removeprefix("grad_norm/") for k in norms} - {"total"}
    # Both recurrent layers, by their parameter names, and the rest of the net.
    assert any(k.endswith("weight_hh_l0") for k in layers) and any(k.endswith("weight_hh_l1") for k in layers)
    assert len(layers) == sum(1 for p in module.parameters() if p.requires_grad)
    assert all(math.isfinite(v) and v > 0 for v in norms.values())
    assert norms["grad_norm/total"] > 1e-3  # unclipped
    history = client.get_metric_history(logger.run_id, "grad_norm/total")
    assert sorted(m.step for m in history) == [0, 2, 4]
    last = {k: client.get_metric_history(logger.run_id, f"grad_norm/{k}")[-1].value for k in layers}
    assert history[-1].value == pytest.approx(math.sqrt(sum(v * v for v in last.values())), rel=1e-4)


def test_grad_norms_are_a_default_callback_and_null_turns_them_off(tmp_path):
    cfg = compose_train([], tmp_path)
    assert cfg.callbacks.grad_norms.every_n_steps == 50
    assert isinstance(instantiate(cfg.callbacks.grad_norms), GradNormLogger)
    cfg = compose_train(["callbacks.grad_norms=null"], tmp_path)
    # fit() instantiates the entries that are set
    kept = [instantiate(cb) for cb in cfg.callbacks.values() if cb]
    assert not any(isinstance(cb, GradNormLogger) for cb in kept) and len(kept) == 2


def test_grad_norm_logger_rejects_a_bad_interval():
    with pytest.raises(ConfigError, match="every_n_steps must be an integer >= 1"):
        GradNormLogger(every_n_steps=0)


def test_tune_lr_trains_with_the_found_rate_and_logs_it(
    tmp_path, history, isolated_mlflow, monkeypatch, capsys
):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr("forecast.lr_finder.NUM_TRAINING", STEPS)
    cfg = compose_train([*TINY, f"data.path={history}", "tune_lr=true"], tmp_path / "out")
    with open_dict(cfg):
        del cfg["hydra"]  # as in the app, where HydraConfig holds it: the run logs the config's params
    result = fit(cfg)

    lr = float(MlflowClient().get_run(result.run_id).data.params["lr_found"])
    assert lr != pytest.approx(1e-3)
    assert result.module.hparams.lr == pytest.approx(lr)
    # The training's optimizer ran with it (no schedule: it stays there).
    assert result.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(lr)
    assert result.trainer.global_step == STEPS, "a full epoch after the finder, not its leftovers"
    run = MlflowClient().get_run(result.run_id)
    assert run.data.params["model/lr"] == "0.001" and run.data.params["tune_lr"] == "True"
    assert "lr_finder.png" in {a.path for a in MlflowClient().list_artifacts(result.run_id)}
    assert any(k.startswith("grad_norm/") for k in run.data.metrics)
    out = capsys.readouterr().out
    assert f"learning-rate finder: model.lr={lr:.3g} (configured 0.001; " in out
    assert "rates tried, 1e-08 to " in out
    # Lightning's temporary checkpoint is gone, and nothing landed in the working folder.
    assert not list(tmp_path.rglob(".lr_find*"))
    assert not list(work.iterdir())

    # A resume does not search again: the checkpoint's optimizer state holds the found rate.
    last = tmp_path / "out" / "checkpoints" / "last.ckpt"
    cfg = compose_train([*TINY, f"data.path={history}", "tune_lr=true", f"resume={last}"], tmp_path / "out")
    with open_dict(cfg):
        del cfg["hydra"]
    resumed = fit(cfg)
    assert resumed.run_id == result.run_id
    assert resumed.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(lr)
    assert "learning-rate finder" not in capsys.readouterr().out


def test_tune_lr_without_enough_steps_keeps_model_lr(tmp_path, history, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    few = [o for o in TINY if not o.startswith("trainer.limit_train_batches=")]
    cfg = compose_train(
        [*few, f"data.path={history}", "tune_lr=true", "~logger", "trainer.limit_train_batches=5"], tmp_path
    )
    result = fit(cfg)
    assert result.module.hparams.lr == pytest.approx(1e-3)
    assert "learning-rate finder: no suggestion after 5 steps" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["trainer=ddp_cpu"], "trainer.strategy=ddp"),
        (["trainer=multinode"], "trainer.strategy=ddp"),
        (["trainer.devices=2"], "trainer.devices=2"),
        (["trainer.devices=-1"], "trainer.devices=-1"),
        (["trainer.devices=[0,1]"], r"trainer.devices=\[0, 1\]"),
    ],
)
def test_tune_lr_refuses_several_devices_before_anything_runs(tmp_path, overrides, named):
    cfg = compose_train(["tune_lr=true", *overrides], tmp_path)
    with pytest.raises(ConfigError, match=rf"tune_lr=true .* one device, but {named}: .*model.lr=<it>"):
        fit(cfg)
    assert not (tmp_path / "mlflow.db").exists(), "refused before the MLflow run exists"


def test_sweep_searches_cell_layers_size_lr_and_batch_size(tmp_path):
    cfg = compose_train(["hparams_search=lstm_optuna"], tmp_path)
    params = cfg.hydra.sweeper.params
    space = parse_search_space([f"{key}={value}" for key, value in params.items()])
    assert space.distributions["model.cell"] == CategoricalDistribution(["lstm", "gru", "peephole", "slstm"])
    assert {"model.num_layers", "model.hidden_size", "model.lr"} <= set(space.distributions)
    assert space.distributions["data.batch_size"] == CategoricalDistribution([64, 128, 256, 512])
    # data.batch_size is an option of every data config, so the sweep composes with each.
    for data in ("m4_hourly_sample", "epf_np_sample", "file"):
        assert "batch_size" in compose_train(["hparams_search=lstm_optuna", f"data={data}"], tmp_path).data
