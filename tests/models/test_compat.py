"""Nets saved before covariates existed, or before the net was split into parts, still load.

`fixtures/nets_before_covariates.pt` holds tiny nets built and saved by the code before issue 11
(state dict, constructor values, and their outputs on a fixed batch): lstm, gru, bilstm (segment
embedding, MLP head), step-by-step with the last-value norm and the linear skip, the segment
decoder with three quantiles, and the per-series learned cycle.
"""

from pathlib import Path

import pytest
import torch

from forecast.models import ForecastModule, build_net
from forecast.models.inputs import PositionalNet, input_keys

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "nets_before_covariates.pt", weights_only=True)
NAMES = sorted(FIXTURE["nets"])
NO_COVARIATES = [
    None,
    {},
    {"futr": 0, "futr_cat": [], "hist": 0, "hist_cat": [], "static": 0, "static_cat": []},
]


def _inputs() -> tuple[torch.Tensor, ...]:
    return FIXTURE["x"], FIXTURE["x_mask"], FIXTURE["step"], FIXTURE["series"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("covariates", NO_COVARIATES)
def test_old_nets_keep_their_parameters_and_numbers(name, covariates):
    saved = FIXTURE["nets"][name]
    net = build_net("recurrent", {**saved["params"], "covariates": covariates}).eval()
    # The old flat names (rnn.*, head.*, cycle) map onto the parts: strict loading succeeds.
    net.load_state_dict(dict(saved["state"]), strict=True)
    x, x_mask, step, series = _inputs()
    with torch.no_grad():
        positional = net(x, x_mask, step, series)
        batched = net({"x": x, "x_mask": x_mask, "step": step, "series": series})
    torch.testing.assert_close(positional, saved["out"], rtol=0, atol=1e-6)
    assert torch.equal(positional, batched)


@pytest.mark.parametrize("name", NAMES)
def test_rebuilt_net_is_bit_for_bit_the_saved_one(name):
    params = FIXTURE["nets"][name]["params"]
    torch.manual_seed(3)
    net = build_net("recurrent", params).eval()
    again = build_net("recurrent", params).eval()
    again.load_state_dict(net.state_dict())
    x, x_mask, step, series = _inputs()
    batch = {"x": x, "x_mask": x_mask, "step": step, "series": series}
    keys = input_keys(params)
    with torch.no_grad():
        assert torch.equal(net(batch), again(batch))
        assert torch.equal(net(batch), PositionalNet(again, keys)(*(batch[k] for k in keys)))


def test_module_without_covariates_saves_none_and_the_old_keys():
    params = FIXTURE["nets"]["lstm"]["params"]
    module = ForecastModule(**{k: v for k, v in params.items() if k != "n_outputs"})
    assert module.net_params["covariates"] is None
    assert len(module.net.state_dict()) == len(FIXTURE["nets"]["lstm"]["state"])
    # A model saved before covariates has no "covariates" in its net params: it rebuilds.
    old_params = {k: v for k, v in module.net_params.items() if k != "covariates"}
    build_net(module.net_kind, old_params).load_state_dict(module.net.state_dict())


def _same_numbers(got: torch.Tensor, saved: torch.Tensor) -> None:
    """Equal to float32 rounding: the fixture was saved on an AVX2 machine, and an AVX-512 one
    sums in another order (2e-7 at most, seen); a wrong key map is off by far more."""
    torch.testing.assert_close(got, saved, rtol=0, atol=1e-6)


PARTS = torch.load(Path(__file__).parent / "fixtures" / "nets_before_parts.pt", weights_only=True)


@pytest.mark.parametrize("name", sorted(PARTS["nets"]))
def test_nets_saved_before_the_parts_split_load_and_give_the_same_numbers(name):
    """`fixtures/nets_before_parts.pt`: nets with every covariate kind, both decoders, the cycle,
    the skip and both norms, saved by the code before issue 12 split the net into parts."""
    saved = PARTS["nets"][name]
    net = build_net("recurrent", saved["params"]).eval()
    net.load_state_dict(dict(saved["state"]), strict=True)
    with torch.no_grad():
        _same_numbers(net(PARTS["batch"]), saved["out"])


def test_an_old_state_dict_inside_a_checkpoint_loads_under_its_prefix():
    """Lightning checkpoints hold the net under `net.`: the key map works below a prefix too."""
    saved = PARTS["nets"]["cov_step_gru_skip_cycle"]
    params = {k: v for k, v in saved["params"].items() if k not in ("n_series", "covariates")}
    # segment_len=1: the net was saved step by step (ForecastModule's default before it took
    # conf/model/lstm.yaml's, 24)
    module = ForecastModule(
        **params, segment_len=1, cycle_per_series=True, n_series=3, covariates=saved["params"]["covariates"]
    )
    module.load_state_dict({f"net.{k}": v for k, v in saved["state"].items()}, strict=True)
    with torch.no_grad():
        _same_numbers(module.net.eval()(PARTS["batch"]), saved["out"])
