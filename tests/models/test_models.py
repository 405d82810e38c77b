import pytest
import torch

from forecast.models import ForecastModule, RecurrentForecaster, build_net
from forecast.models.decoders import DECODERS
from forecast.models.distributions import DISTRIBUTIONS
from forecast.models.encoders import ENCODERS
from forecast.models.outputs import OUTPUTS


@pytest.mark.parametrize("cell", ENCODERS)
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("segment_len", [1, 5])
def test_output_shape(cell, num_layers, bidirectional, segment_len):
    net = RecurrentForecaster(
        input_size=23,
        horizon=7,
        cell=cell,
        hidden_size=8,
        num_layers=num_layers,
        bidirectional=bidirectional,
        segment_len=segment_len,
        head_hidden=16,
    )
    out = net(torch.randn(4, 23), torch.ones(4, 23, dtype=torch.bool))
    assert out.shape == (4, 7, 1)
    assert net.encoder.num_layers == num_layers and net.encoder.bidirectional == bidirectional


@pytest.mark.parametrize("cell", ENCODERS)
@pytest.mark.parametrize("segment_len", [1, 4, 5])
def test_segment_decoder_shapes_and_limits(cell, segment_len):
    # Horizon 7 is not a multiple of 4 or 5: the last output segment is cut.
    net = RecurrentForecaster(
        input_size=20,
        horizon=7,
        cell=cell,
        hidden_size=8,
        num_layers=2,
        segment_len=segment_len,
        decoder="segments",
        n_outputs=3,
    )
    assert net(torch.randn(4, 20)).shape == (4, 7, 3)
    assert net.decoder.positions.shape == (-(-7 // segment_len), net.encoder.input_size)
    with pytest.raises(ValueError, match="bidirectional=false"):
        RecurrentForecaster(input_size=20, horizon=7, bidirectional=True, decoder="segments")
    with pytest.raises(ValueError, match="unknown decoder"):
        RecurrentForecaster(input_size=20, horizon=7, decoder="transformer")


@pytest.mark.parametrize("output", [*OUTPUTS, *DISTRIBUTIONS])
@pytest.mark.parametrize("decoder", DECODERS)
def test_every_decoder_gives_every_output_part_its_columns(decoder, output):
    params = dict(
        input_size=12, horizon=5, hidden_size=8, head_hidden=8, segment_len=4, attention_dim=8,
        decoder=decoder, output=output, n_outputs=3, covariates={"futr": 2, "static": 1},
    )  # fmt: skip
    torch.manual_seed(0)
    net = build_net("recurrent", params).eval()
    batch = {"x": torch.randn(4, 12), "futr": torch.randn(4, 17, 2), "static": torch.randn(4, 1)}
    assert net(batch).shape == (4, 5, net.output.n_params)
    again = build_net("recurrent", params).eval()
    again.load_state_dict(net.state_dict())  # the same parts, rebuilt from the values alone
    with torch.no_grad():
        assert torch.equal(again(batch), net(batch))


def test_window_norm_is_scale_equivariant():
    torch.manual_seed(0)
    net = RecurrentForecaster(input_size=12, horizon=3, hidden_size=8, window_norm=True)
    x = torch.randn(2, 12)
    torch.testing.assert_close(net(10 * x + 5), 10 * net(x) + 5, rtol=1e-4, atol=1e-3)


def test_last_value_norm_is_shift_equivariant_and_skips_missing_steps():
    torch.manual_seed(0)
    net = RecurrentForecaster(input_size=12, horizon=3, hidden_size=8, window_norm="last", segment_len=4)
    x = torch.randn(2, 12)
    torch.testing.assert_close(net(x + 7.0), net(x) + 7.0, rtol=1e-4, atol=1e-4)
    # A missing last step: the last *observed* value anchors the window.
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[:, -1] = False
    shifted = torch.where(mask, x + 3.0, torch.zeros_like(x))
    torch.testing.assert_close(
        net(shifted, mask), net(torch.where(mask, x, 0.0), mask) + 3.0, rtol=1e-4, atol=1e-4
    )
    with pytest.raises(ValueError, match="window_norm must be"):
        RecurrentForecaster(input_size=12, horizon=3, window_norm="median")


def test_quantile_module_outputs_one_column_per_quantile():
    module = ForecastModule(
        input_size=12, horizon=4, hidden_size=8, loss="quantile", quantiles=[0.9, 0.1, 0.5]
    )
    assert module(torch.randn(3, 12)).shape == (3, 4, 3)
    assert module.levels == [0.1, 0.5, 0.9]  # sorted: its point forecast is the 0.5 column


def test_bad_settings_fail_loudly():
    with pytest.raises(ValueError, match="unknown cell"):
        RecurrentForecaster(input_size=4, horizon=2, cell="transformer")
    with pytest.raises(ValueError, match="needs model.quantiles"):
        ForecastModule(input_size=4, horizon=2, loss="quantile")
    with pytest.raises(ValueError, match="unknown network"):
        build_net("nope", {})


def test_net_rebuilds_from_saved_hyperparameters():
    module = ForecastModule(input_size=12, horizon=4, cell="gru", hidden_size=8, bidirectional=True)
    again = build_net(module.net_kind, module.net_params)
    again.load_state_dict(module.net.state_dict())
    x = torch.randn(2, 12)
    torch.testing.assert_close(again.eval()(x), module.net.eval()(x))


def test_the_optimizer_steps_as_the_plain_loop_does():
    """configure_optimizers' multi-tensor AdamW (foreach, for speed) moves the weights exactly as
    PyTorch's default per-parameter loop on the CPU does."""

    def trained(foreach: bool) -> torch.Tensor:
        torch.manual_seed(0)
        module = ForecastModule(24, 6, hidden_size=8, head_hidden=8, segment_len=6, lr=1e-2)
        optimizer = module.configure_optimizers()
        assert optimizer.defaults["foreach"] is True
        if not foreach:
            optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2, weight_decay=0.0)
        g = torch.Generator().manual_seed(1)
        for _ in range(20):
            x, y = torch.randn(16, 24, generator=g), torch.randn(16, 6, generator=g)
            loss = (module(x)[..., 0] - y).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return torch.cat([p.detach().flatten() for p in module.parameters()])

    assert torch.equal(trained(True), trained(False))
