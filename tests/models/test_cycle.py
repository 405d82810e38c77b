"""The learned cycle (CycleNet-style): phases from step numbers, per-series deviations, export."""

import numpy as np
import pandas as pd
import pytest
import torch
from model_helpers import tiny_forecaster

from forecast.data import SeriesDataModule
from forecast.data.calendar import step_index
from forecast.forecaster import Forecaster
from forecast.models import ForecastModule, RecurrentForecaster


def _net(**kw) -> RecurrentForecaster:
    torch.manual_seed(0)
    return RecurrentForecaster(input_size=12, horizon=5, hidden_size=8, head_hidden=8, cycle_len=4, **kw)


def test_step_numbers_give_calendar_phases():
    hours = pd.date_range("2016-07-01", periods=30, freq="h")
    assert list(step_index(hours.to_numpy(), "h") % 24) == [h % 24 for h in range(30)]
    days = pd.date_range("2024-01-01", periods=8, freq="D")  # a Monday
    assert np.array_equal(step_index(days.to_numpy(), "D") % 7, (np.arange(8) + 4) % 7)
    months = pd.date_range("2024-01-01", periods=13, freq="MS")
    assert np.array_equal(np.diff(step_index(months.to_numpy(), "MS")), np.ones(12))
    assert list(step_index(np.array([10, 12, 14]), 2)) == [5, 6, 7]


def test_cycle_is_removed_from_the_input_and_added_to_the_output():
    net = _net().eval()
    with torch.no_grad():
        net.cycle.table.copy_(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    x, step = torch.randn(3, 12), torch.tensor([0, 1, 7])
    base = RecurrentForecaster(input_size=12, horizon=5, hidden_size=8, head_hidden=8).eval()
    base.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("cycle")})
    phase_in = (step[:, None] + torch.arange(-12, 0)) % 4
    phase_out = (step[:, None] + torch.arange(5)) % 4
    expected = base(x - phase_in.float()) + phase_out.float()[:, :, None]
    torch.testing.assert_close(net(x, None, step), expected)


def test_per_series_cycles_and_the_shared_one_for_new_series():
    net = _net(n_series=3).eval()
    with torch.no_grad():
        net.cycle.series.weight[2] = 5.0  # series code 2 sits 5 above the shared cycle
    x, step = torch.zeros(2, 12), torch.tensor([3, 3])
    out = net(x, None, step, torch.tensor([0, 2]))
    # Unseen (code 0) keeps the shared cycle; code 2's input and output both move by 5, so its
    # forecast is the recurrent path's answer to (x - 5), plus 5.
    moved = net(x - 5.0, None, step, torch.tensor([0, 0])) + 5.0
    torch.testing.assert_close(out[1], moved[1])
    assert net.cycle.series.weight[0].abs().sum() == 0  # padding row: the shared cycle only


def test_a_cycle_model_needs_step_numbers():
    with pytest.raises(ValueError, match="pass `step`"):
        _net()(torch.randn(2, 12))
    with pytest.raises(ValueError, match="needs n_series"):
        ForecastModule(input_size=12, horizon=5, cycle_len=24, cycle_per_series=True)


def test_batches_carry_each_window_s_step_and_series(tiny_frame):
    dm = SeriesDataModule(frame=tiny_frame, freq="h", input_size=24, horizon=6)
    dm.setup()
    batch = dm.datasets["test"].__getitems__(list(range(len(dm.datasets["test"]))))
    # The test window's first target is the 7th-last row of each series.
    first_target = tiny_frame.groupby("unique_id", sort=False)["ds"].nth(-6).to_numpy()
    assert np.array_equal(batch["step"].numpy(), step_index(first_target, "h"))
    assert np.array_equal(batch["series"].numpy(), dm.scaler.codes(dm.ids))
    assert sorted(batch["series"].tolist()) == list(range(1, 7))


@pytest.fixture
def cycle_forecaster(tiny_frame) -> Forecaster:
    def visible_cycle(module, _dm):  # a visible cycle, different per series
        module.net.cycle.table.copy_(torch.sin(torch.arange(24) / 24 * 2 * torch.pi))
        module.net.cycle.series.weight[1:].normal_()

    n_series = tiny_frame["unique_id"].nunique()
    return tiny_forecaster(
        tiny_frame, cycle_len=24, cycle_per_series=True, n_series=n_series, tweak=visible_cycle
    )


def test_forecasts_follow_the_calendar_of_the_history(cycle_forecaster, tiny_frame):
    out = cycle_forecaster.predict(tiny_frame)
    # The same values an hour later are a different phase: a different forecast.
    later = tiny_frame.assign(ds=tiny_frame["ds"] + pd.Timedelta("1h"))
    assert not np.allclose(cycle_forecaster.predict(later)["y_hat"], out["y_hat"])
    # A full cycle (a day) later is the same phase: the same forecast.
    day = tiny_frame.assign(ds=tiny_frame["ds"] + pd.Timedelta("1D"))
    np.testing.assert_allclose(cycle_forecaster.predict(day)["y_hat"], out["y_hat"], rtol=1e-6)
    # A series the model never saw gets the shared cycle only (and still forecasts).
    new = tiny_frame[tiny_frame.unique_id == "s0"].assign(unique_id="new")
    assert np.isfinite(cycle_forecaster.predict(new)["y_hat"]).all()


def test_cycle_model_round_trips_and_exports_to_onnx(cycle_forecaster, tiny_frame, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = cycle_forecaster.save(tmp_path / "model", export=["onnx"])
    expected = cycle_forecaster.predict(tiny_frame)
    for runtime in ("torch", "onnx"):
        again = Forecaster.load(path, runtime=runtime)
        assert again.runtime == runtime
        got = again.predict(tiny_frame)
        np.testing.assert_allclose(got["y_hat"], expected["y_hat"], rtol=1e-5, atol=1e-4)
