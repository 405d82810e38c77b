"""Distribution heads (normal, Student-t, negative binomial): valid parameters, a likelihood that
fits the distribution it came from, exact quantiles, CRPS; and monotone quantiles never cross."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from forecast.errors import ConfigError
from forecast.metrics import quantile_crps
from forecast.models import ForecastModule, RecurrentForecaster
from forecast.models import distributions as dist
from forecast.models.distributions import DISTRIBUTIONS
from forecast.models.module import LOSSES
from forecast.models.outputs import build_output

KINDS = list(DISTRIBUTIONS)  # every distribution head


def _net(kind: str, seed: int = 0, **kw) -> RecurrentForecaster:
    torch.manual_seed(seed)
    return RecurrentForecaster(
        input_size=12,
        horizon=4,
        hidden_size=8,
        head_hidden=8,
        output=kind,
        n_outputs=DISTRIBUTIONS[kind].n_params,
        **kw,
    ).eval()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("window_norm", [False, True])
def test_heads_give_valid_parameters_for_any_input(kind, window_norm):
    net = _net(kind, window_norm=window_norm, linear_skip=True)
    x = torch.randn(64, 12) * torch.logspace(-3, 3, 64)[:, None]  # tiny to huge windows
    with torch.no_grad():
        params = net(x)  # (B, H, P)
    assert params.shape == (64, 4, DISTRIBUTIONS[kind].n_params)
    assert torch.isfinite(params).all()
    assert (params[..., 1] > 0).all()  # scale, or negbin's dispersion
    if kind == "student_t":
        assert (params[..., 2] > 2).all()


def test_only_the_location_is_shifted_and_a_scale_only_scaled():
    raw = torch.randn(3, 4, 3)
    shift, mean, std = torch.randn(3, 4), torch.randn(3, 1), torch.rand(3, 1) + 0.5
    out = build_output("student_t", 99)(raw, [shift], mean, std)  # n_outputs is not read
    torch.testing.assert_close(out[..., 0], (raw[..., 0] + shift) * std + mean)
    torch.testing.assert_close(out[..., 1], (torch.nn.functional.softplus(raw[..., 1]) + 1e-4) * std)
    torch.testing.assert_close(out[..., 2], 2 + torch.nn.functional.softplus(raw[..., 2]) + 1e-4)


def _fit(
    kind: str, y: torch.Tensor, loc: float, scale: float, steps: int = 400
) -> tuple[list[float], torch.Tensor]:
    """Fit one cell's parameters (the output part on a free raw vector) to samples y (scaled)."""
    torch.manual_seed(0)
    head = build_output(kind, 0)
    raw = torch.zeros(1, 1, head.n_params, requires_grad=True)
    optimizer = torch.optim.Adam([raw], lr=0.05)
    lo, sc = torch.tensor([[loc]]), torch.tensor([[scale]])
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = DISTRIBUTIONS[kind].nll(head(raw, [], None, None), y[None, :], lo, sc).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, head(raw, [], None, None).detach()


QS = [0.1, 0.5, 0.9]
CASES = {
    "normal": stats.norm(1.5, 0.7),
    "student_t": stats.t(5.0, -0.5, 1.2),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_likelihood_fits_its_own_distribution_and_recovers_its_quantiles(kind):
    true = CASES[kind]
    y = torch.from_numpy(true.rvs(size=20_000, random_state=np.random.default_rng(1)).astype(np.float32))
    losses, params = _fit(kind, y, 0.0, 1.0)
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0] and np.mean(losses[-20:]) <= np.mean(losses[100:120])
    fitted = DISTRIBUTIONS[kind].quantiles(params.numpy(), QS)[0, 0]
    expected = true.ppf(QS)
    assert np.abs(fitted - expected).max() < 0.05 * np.abs(expected).max(), (fitted, expected)
    # each quantile within 5% of the true one's distance from the median
    spread = expected[2] - expected[1]
    assert abs(fitted[2] - expected[2]) < 0.05 * spread and abs(fitted[0] - expected[0]) < 0.05 * spread


@pytest.mark.parametrize(
    "counts", [stats.poisson(5.0), stats.nbinom(2.0, 2.0 / 7.0)], ids=["poisson", "negbin"]
)  # both mean 5; the second overdispersed (variance 17.5)
def test_negbin_fits_counts_with_integer_quantiles_and_nominal_coverage(counts):
    rng = np.random.default_rng(2)
    raw = counts.rvs(size=20_000, random_state=rng).astype(np.float32)
    loc, scale = 4.0, 2.5  # the series scaler's; the net sees (raw - loc) / scale
    y = torch.from_numpy((raw - loc) / scale)
    losses, params = _fit("negbin", y, loc, scale)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    scaled = DISTRIBUTIONS["negbin"].quantiles(params.numpy(), QS, np.array([loc]), np.array([scale]))[0, 0]
    q = scaled * scale + loc
    np.testing.assert_allclose(q, np.round(q), atol=1e-5)
    np.testing.assert_array_equal(np.round(q), counts.ppf(QS))  # the true quantiles, exactly
    fresh = counts.rvs(size=20_000, random_state=rng)
    inside = ((fresh >= round(q[0])) & (fresh <= round(q[2]))).mean()
    assert 0.8 <= inside <= 0.95  # discrete: at least the nominal 80%
    mean = float(DISTRIBUTIONS["negbin"].point_raw(params, torch.tensor([[loc]]), torch.tensor([[scale]])))
    assert mean == pytest.approx(5.0, rel=0.03)


def _random_params(kind: str, rng: np.random.Generator, shape=(5, 3)) -> np.ndarray:
    loc = rng.normal(size=shape)
    scale = rng.uniform(0.1, 3.0, shape)
    extra = [rng.uniform(2.01, 30.0, shape)] if kind == "student_t" else []
    return np.stack([loc, scale, *extra], axis=-1)


def _negbin_ppf(levels, p, loc, scale):
    mean = np.log1p(np.exp(p[..., 0, :] * scale[:, None, None] + loc[:, None, None]))
    r = 1.0 / p[..., 1, :]
    counts = stats.nbinom.ppf(levels, r, r / (r + mean))
    return (counts - loc[:, None, None]) / scale[:, None, None]


# Each distribution's quantiles written out with scipy, apart from the code under test:
# (levels (Q,), params (N, H, P, 1), the series' loc and scale (N,)) -> (N, H, Q) scaled.
REFERENCE_PPF = {
    "normal": lambda levels, p, loc, scale: stats.norm.ppf(levels, p[..., 0, :], p[..., 1, :]),
    "student_t": lambda levels, p, loc, scale: stats.t.ppf(levels, p[..., 2, :], p[..., 0, :], p[..., 1, :]),
    "negbin": _negbin_ppf,
}


def test_every_distribution_has_reference_quantiles():
    assert sorted(REFERENCE_PPF) == sorted(DISTRIBUTIONS), "add the new distribution's ppf to REFERENCE_PPF"


@pytest.mark.parametrize("kind", KINDS)
def test_quantiles_are_scipys_and_monotone_in_the_level(kind):
    rng = np.random.default_rng(3)
    params = _random_params(kind, rng)  # (N, H, P)
    loc, scale = rng.uniform(0, 50, 5), rng.uniform(0.5, 10, 5)
    levels = np.linspace(0.01, 0.99, 41)
    got = dist.quantiles(kind, params, levels, loc, scale)  # (N, H, Q)
    assert got.shape == (5, 3, 41) and got.dtype == np.float32
    expected = REFERENCE_PPF[kind](levels, params[..., None], loc, scale)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert (np.diff(got, axis=-1) >= 0).all()
    np.testing.assert_array_equal(DISTRIBUTIONS[kind].quantiles(params, levels, loc, scale), got)


def test_negbin_quantiles_need_the_series_scaling():
    with pytest.raises(ValueError, match="loc and scale"):
        dist.quantiles("negbin", np.ones((1, 1, 2)), QS)
    with pytest.raises(ConfigError, match="unknown distribution") as error:
        dist.quantiles("gamma", np.ones((1, 1, 2)), QS)
    assert all(name in str(error.value) for name in DISTRIBUTIONS)  # the registry's names


def test_every_distribution_is_an_output_part_and_a_loss_of_its_name():
    for name, distribution in DISTRIBUTIONS.items():
        assert distribution.name == name and name in LOSSES and name in dist.KINDS
        assert build_output(name, 99).n_params == distribution.n_params  # n_outputs is not read
        module = ForecastModule(input_size=4, horizon=2, hidden_size=8, head_hidden=8, loss=name)
        assert module.net_params["output"] == name  # the saved format names the distribution
        assert module.net_params["n_outputs"] == distribution.n_params
        assert module(torch.randn(3, 4)).shape == (3, 2, distribution.n_params)


def _crps_integral(cdf, y: float, lo: float, hi: float) -> float:
    """CRPS = integral of (F(x) - 1{x >= y})^2 dx, numerically."""
    left = integrate.quad(lambda x: cdf(x) ** 2, lo, y, limit=200)[0]
    right = integrate.quad(lambda x: (1.0 - cdf(x)) ** 2, y, hi, limit=200)[0]
    return left + right


def _crps_pinball_integral(ppf, y: float) -> float:
    """CRPS = 2 x integral over levels of the pinball loss of the level's quantile."""
    return 2.0 * integrate.quad(lambda a: max(a * (y - ppf(a)), (a - 1) * (y - ppf(a))), 0, 1, limit=200)[0]


@pytest.mark.parametrize("y", [-3.0, 0.2, 1.5, 4.0])
def test_crps_closed_forms_match_the_integrals(y):
    mu, sigma, df = 0.5, 1.3, 4.0
    params = torch.tensor([[[mu, sigma, df]]])
    yt, one, zero = torch.tensor([[y]]), torch.ones(1, 1), torch.zeros(1, 1)
    normal = float(DISTRIBUTIONS["normal"].crps(params[..., :2], yt, zero, one))
    t = float(DISTRIBUTIONS["student_t"].crps(params, yt, zero, one))
    assert normal == pytest.approx(_crps_integral(stats.norm(mu, sigma).cdf, y, -40, 40), rel=1e-5)
    assert normal == pytest.approx(_crps_pinball_integral(stats.norm(mu, sigma).ppf, y), rel=1e-4)
    assert t == pytest.approx(_crps_integral(stats.t(df, mu, sigma).cdf, y, -1e4, 1e4), rel=1e-4)
    # On the raw scale: a series scale of 3 triples the CRPS.
    assert float(DISTRIBUTIONS["normal"].crps(params[..., :2], yt, zero, 3 * one)) == pytest.approx(
        3 * normal
    )


def test_negbin_crps_grid_approximation_is_close_to_the_exact_sum():
    mean, alpha, loc, scale = 5.0, 0.3, 0.0, 1.0
    r = 1 / alpha
    counts = stats.nbinom(r, r / (r + mean))
    col0 = float(np.log(np.expm1(mean)))  # softplus^-1: the location column of that mean
    params = torch.tensor([[[col0, alpha]]], dtype=torch.float64)
    k = np.arange(0, 400)
    for y in [0.0, 3.0, 5.0, 12.0]:
        exact = float(((counts.cdf(k) - (k >= y)) ** 2).sum())
        approx = float(
            DISTRIBUTIONS["negbin"].crps(
                params, torch.tensor([[y]]), torch.tensor([[loc]]), torch.tensor([[scale]])
            )
        )
        assert approx == pytest.approx(exact, rel=0.05), y


def test_quantile_crps_is_twice_the_mean_pinball():
    pred, y = torch.tensor([[[-1.0, 0.0, 1.0]]]), torch.tensor([[0.5]])
    qs = torch.tensor([0.1, 0.5, 0.9])
    expected = 2 * np.mean([0.1 * 1.5, 0.5 * 0.5, 0.1 * 0.5])  # the 0.9 quantile is above y
    assert float(quantile_crps(pred, y, qs)) == pytest.approx(expected)


@pytest.mark.parametrize("loss", [*KINDS, "quantile"])
def test_probabilistic_modules_log_crps_and_coverage_on_val_and_test(loss):
    module = ForecastModule(
        input_size=12, horizon=4, hidden_size=8, head_hidden=8, loss=loss,
        quantiles=[0.9, 0.1, 0.5] if loss == "quantile" else None,
    )  # fmt: skip
    assert module.hparams.quantiles == [0.9, 0.1, 0.5] if loss == "quantile" else [0.1, 0.5, 0.9]
    assert "crps" not in module.metrics["train_"]
    assert list(module.metrics["val_"])[-2:] == ["crps", "coverage_80"]
    logged = {}
    module.log = lambda name, value, **kw: logged.setdefault(name, value)
    b = 6
    batch = {
        "x": torch.randn(b, 12), "x_mask": torch.ones(b, 12, dtype=torch.bool),
        "y": torch.randn(b, 4), "y_mask": torch.ones(b, 4, dtype=torch.bool),
        "loc": torch.full((b,), 3.0), "scale": torch.full((b,), 2.0), "mase_scale": torch.ones(b),
    }  # fmt: skip
    loss_value = module._common_step(batch, "val")
    assert torch.isfinite(loss_value)
    values = {name: float(metric.compute()) for name, metric in module.metrics["val_"].items()}
    assert values["crps"] > 0 and 0 <= values["coverage_80"] <= 1
    assert {"val/crps", "val/coverage_80"} <= set(logged)


def test_loss_and_quantiles_are_checked():
    with pytest.raises(ConfigError, match="unknown loss 'poisson'"):
        ForecastModule(input_size=4, horizon=2, loss="poisson")
    with pytest.raises(ConfigError, match="model.quantiles needs loss=quantile or a distribution"):
        ForecastModule(input_size=4, horizon=2, loss="mae", quantiles=[0.1, 0.9])
    module = ForecastModule(input_size=4, horizon=2, loss="normal", quantiles=[0.05, 0.5, 0.95])
    assert list(module.metrics["test_"])[-1] == "coverage_90"


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    magnitude=st.floats(1e-3, 1e3),
    n_quantiles=st.integers(2, 7),
    window_norm=st.sampled_from([False, True, "last"]),
    init_scale=st.floats(0.1, 20.0),
)
def test_monotone_quantile_head_never_crosses(seed, magnitude, n_quantiles, window_norm, init_scale):
    torch.manual_seed(seed)
    net = RecurrentForecaster(
        input_size=8, horizon=3, hidden_size=8, head_hidden=8, output="quantiles",
        n_outputs=n_quantiles, window_norm=window_norm, linear_skip=True,
    ).eval()  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(init_scale)  # random weights, far from the initial ones
        out = net(torch.randn(16, 8) * magnitude)  # (B, H, Q)
    assert torch.isfinite(out).all()
    assert (out.diff(dim=-1) >= 0).all()


class _Laplace(dist.Distribution):
    """A distribution written as a new one would be: one class, registered by name."""

    name = "laplace"

    def constrain(self, raw, std):
        return dist.spread(raw, std)

    def torch_distribution(self, params, loc, scale):
        return torch.distributions.Laplace(params[..., 0], params[..., 1], validate_args=False)

    def ppf(self, params, levels, loc, scale):
        return params[..., :1] + params[..., 1:2] * stats.laplace.ppf(levels)


def test_a_new_distribution_is_one_class_in_the_registry(monkeypatch):
    monkeypatch.setitem(DISTRIBUTIONS, "laplace", _Laplace())
    net = _net("laplace", window_norm=True)  # the output part and the net find it by name
    with torch.no_grad():
        params = net(torch.randn(6, 12))  # (B, H, 2)
    assert params.shape == (6, 4, 2) and (params[..., 1] > 0).all()
    y, loc, scale = torch.randn(6, 4), torch.zeros(6, 1), torch.full((6, 1), 2.0)
    law = stats.laplace(params[..., 0].numpy(), params[..., 1].numpy())
    nll = DISTRIBUTIONS["laplace"].nll(params, y, loc, scale)
    np.testing.assert_allclose(nll.numpy(), -law.logpdf(y.numpy()), rtol=1e-5, atol=1e-5)
    got = dist.quantiles("laplace", params.numpy(), QS)  # the forecaster's entry point
    np.testing.assert_allclose(
        got, np.moveaxis(law.ppf(np.array(QS)[:, None, None]), 0, -1), rtol=1e-5, atol=1e-5
    )
    # The default CRPS (the quantile grid) against the closed form, b (|z| + exp(-|z|) - 3/4).
    z = ((y - params[..., 0]) / params[..., 1]).abs()
    exact = params[..., 1] * (z + torch.exp(-z) - 0.75) * scale
    torch.testing.assert_close(
        DISTRIBUTIONS["laplace"].crps(params, y, loc, scale), exact, rtol=0.05, atol=1e-3
    )
