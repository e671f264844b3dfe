"""odeflow.nn: parameter counts of seed A / Table 1, ConcatConv2d, ResBlock, ODEBlock."""

import math

import pytest
import torch
from torch import nn

import odeflow
from odeflow.nn import (
    ConcatConv2d,
    ODEBlock,
    ODEFunc,
    ResBlock,
    build_classifier,
    count_parameters,
    mlp,
    nfe_counts,
    odenet,
    resnet,
    rknet,
)

needs_core = pytest.mark.skipif(
    not hasattr(odeflow, "solve"), reason="odeflow.solve (the core) is not available yet"
)


# --- parameter counts -------------------------------------------------------------------


def test_odenet_conv_parameter_count_matches_seed():
    assert count_parameters(odenet(downsampling="conv")) == 208_266


def test_odenet_res_parameter_count_matches_seed():
    assert count_parameters(odenet(downsampling="res")) == 232_970


def test_resnet_parameter_count_matches_seed():
    assert count_parameters(resnet()) == 576_778


def test_rknet_shares_odenet_parameters_and_matches_table1():
    n = count_parameters(rknet())
    assert n == count_parameters(odenet())
    assert abs(n / 1e6 - 0.22) < 0.015  # Table 1: 0.22 M


def test_mlp_parameter_count_matches_table1():
    n = count_parameters(mlp())
    assert n == 784 * 300 + 300 + 300 * 10 + 10
    assert round(n / 1e6, 2) == 0.24  # Table 1: 0.24 M


def test_odeonly_net_of_seed_b():
    model = build_classifier("odeonly")
    assert count_parameters(model) == (16 * 64 + 64) + 75_392 + 128 + 650
    assert model[1].method == "rk4_classic" and model[1].options == {"step_size": 0.1}
    assert isinstance(model[4], nn.Dropout) and model[4].p == 0.5


def test_build_classifier_rejects_unknown_network():
    with pytest.raises(ValueError, match="network must be one of"):
        build_classifier("transformer")


@pytest.mark.parametrize("network", ["resnet", "mlp"])
def test_classifier_output_shape(network):
    model = build_classifier(network, dim=8)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


# --- layers -----------------------------------------------------------------------------


def test_concat_conv_uses_time_as_a_channel():
    torch.manual_seed(0)
    conv = ConcatConv2d(4, 5, 3, padding=1)
    x = torch.randn(2, 4, 6, 6)
    a, b = conv(torch.tensor(0.0), x), conv(torch.tensor(1.0), x)
    assert a.shape == (2, 5, 6, 6)
    assert conv.layer.in_channels == 5
    # the only difference between t=0 and t=1 is the time channel's contribution
    w_t = conv.layer.weight[:, :1]
    expected = torch.nn.functional.conv2d(torch.ones(2, 1, 6, 6), w_t, padding=1)
    torch.testing.assert_close(b - a, expected)


def test_resblock_strided_shortcut_shape():
    block = ResBlock(8, 8, stride=2, downsample=nn.Conv2d(8, 8, 1, 2, bias=False))
    assert block(torch.randn(2, 8, 10, 10)).shape == (2, 8, 5, 5)


def test_odefunc_preserves_shape_and_depends_on_t():
    torch.manual_seed(0)
    f = ODEFunc(8)
    x = torch.randn(2, 8, 5, 5)
    out0, out1 = f(torch.tensor(0.0), x), f(torch.tensor(0.7), x)
    assert out0.shape == x.shape
    assert not torch.allclose(out0, out1)


def test_odeblock_rejects_unknown_gradient():
    with pytest.raises(ValueError, match="gradient must be one of"):
        ODEBlock(ODEFunc(8), gradient="magic")


def test_odeblock_counts_are_zero_before_any_solve():
    block = ODEBlock(ODEFunc(8))
    assert (block.nfe_forward, block.nfe_backward) == (0, 0)
    assert nfe_counts(nn.Sequential(block, nn.ReLU())) == (0, 0)


# --- ODEBlock on the core ----------------------------------------------------------------


class Decay(nn.Module):
    """dy/dt = -k y, y(1) = exp(-k) y(0)."""

    def __init__(self):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(0.8, dtype=torch.float64))

    def forward(self, t, y):
        return -self.k * y


@needs_core
@pytest.mark.parametrize("gradient", ["direct", "adjoint", "checkpoint"])
def test_odeblock_solves_and_reports_nfe(gradient):
    block = ODEBlock(Decay(), rtol=1e-8, atol=1e-10, gradient=gradient)
    y0 = torch.linspace(0.5, 1.5, 4, dtype=torch.float64, requires_grad=True)
    y1 = block(y0)
    torch.testing.assert_close(y1, y0 * math.exp(-0.8), rtol=1e-6, atol=1e-8)
    assert block.nfe_forward == block.last_stats.nfe > 0
    assert block.nfe_backward == 0  # no backward yet
    y1.sum().backward()
    # d/dk sum(y0 e^{-k}) = -sum(y0) e^{-k}
    expected = -y0.detach().sum() * math.exp(-0.8)
    torch.testing.assert_close(block.func.k.grad, expected, rtol=1e-5, atol=1e-7)
    if gradient == "direct":
        assert block.nfe_backward == 0
    else:
        assert block.nfe_backward > 0


@needs_core
def test_odenet_forward_backward_and_nfe():
    torch.manual_seed(0)
    model = odenet(dim=8, tol=1e-3)
    x = torch.randn(2, 1, 28, 28)
    logits = model(x)
    assert logits.shape == (2, 10)
    f, _ = nfe_counts(model)
    assert f >= 6  # dopri5: at least one step of 6 new stages
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@needs_core
def test_odenet_adjoint_gradient_matches_direct():
    torch.manual_seed(0)
    direct = odenet(dim=8, tol=1e-6, gradient="direct").double()
    adjoint = odenet(dim=8, tol=1e-6, gradient="adjoint").double()
    adjoint.load_state_dict(direct.state_dict())
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    for m in (direct, adjoint):
        m(x).pow(2).sum().backward()
    assert nfe_counts(adjoint)[1] > 0
    for (name, p), q in zip(direct.named_parameters(), adjoint.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


@needs_core
def test_odeonly_forward_uses_ten_rk4_steps():
    model = build_classifier("odeonly", dim=8).eval()
    assert model(torch.randn(2, 1, 12, 12)).shape == (2, 10)
    assert nfe_counts(model)[0] == 4 * 10


@needs_core
def test_rknet_uses_fixed_grid():
    model = rknet(dim=8, step_size=0.25)
    model(torch.randn(2, 1, 12, 12))
    assert nfe_counts(model)[0] == 4 * 4  # RK4: 4 stages x 4 steps on [0, 1]
