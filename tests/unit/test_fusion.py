"""Inference rewrites: batch-norm folding, channels-last, torch.compile."""

import shutil

import pytest
import torch
from torch import nn

from speechbrain_sed_condmix.lobes.atst import ATSTFrame
from speechbrain_sed_condmix.lobes.atst_sed import ATSTSED
from speechbrain_sed_condmix.lobes.crnn import CRNN, GLU, ContextGating
from speechbrain_sed_condmix.lobes.fusion import (
    InplaceGate,
    fold_batchnorm,
    optimize_for_inference,
    use_inplace_gates,
)


def _trained_like(model, seed=0):
    """Non-trivial running statistics and affine terms in every BN."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.3 * torch.randn(n, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            m.weight.data.copy_(1 + 0.2 * torch.randn(n, generator=gen))
            m.bias.data.copy_(0.2 * torch.randn(n, generator=gen))
    return model.eval()


def small_crnn(activation="glu"):
    return _trained_like(
        CRNN(
            n_filters=[4, 8, 8],
            pooling=[(2, 4), (2, 4), (1, 8)],
            rnn_hidden=6,
            n_freq=128,
            activation=activation,
        )
    )


def test_folded_conv_is_the_affine_map_of_the_batch_norm():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    bn = nn.BatchNorm2d(3, eps=1e-3)
    net = _trained_like(nn.Sequential(conv, bn))
    gamma, beta = bn.weight.detach(), bn.bias.detach()
    scale = gamma / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight.detach() * scale[:, None, None, None]
    bias = (conv.bias.detach() - bn.running_mean) * scale + beta
    assert fold_batchnorm(net) == 1
    assert isinstance(net[1], nn.Identity)
    torch.testing.assert_close(net[0].weight, weight)
    torch.testing.assert_close(net[0].bias, bias)


@pytest.mark.parametrize("activation", ["glu", "cg", "relu"])
def test_crnn_outputs_unchanged(activation):
    model = small_crnn(activation)
    x = torch.randn(3, 128, 40)
    x_copy = x.clone()
    with torch.no_grad():
        before = model(x)
        fast = optimize_for_inference(model)
        after = fast(x)
    assert torch.equal(x, x_copy)  # the in-place gates keep the input
    # every block's BN folded, none left in the copy; gates swapped
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3
    n_gates = sum(isinstance(m, InplaceGate) for m in fast.modules())
    assert n_gates == (0 if activation == "relu" else 3)
    for name in ("strong", "weak", "embeddings"):
        torch.testing.assert_close(
            getattr(after, name), getattr(before, name), atol=1e-6, rtol=0
        )
    assert fast.cnn.cnn.conv0.weight.is_contiguous(
        memory_format=torch.channels_last
    )


@pytest.mark.parametrize("kind", [GLU, ContextGating])
def test_inplace_gate_matches_the_gate_formula(kind):
    gate = kind(4)
    x = torch.randn(2, 4, 5, 3)
    lin = torch.einsum("oc,bctf->botf", gate.linear.weight, x)
    lin = lin + gate.linear.bias[:, None, None]
    if kind is GLU:
        expected = lin * torch.sigmoid(x)
    else:
        expected = x * torch.sigmoid(lin)
    with torch.no_grad():
        out = InplaceGate(gate)(x.clone())
    torch.testing.assert_close(out, expected)


def test_only_gates_after_a_convolution_are_swapped():
    # a gate that sees the model input would overwrite the caller's tensor
    net = nn.Sequential(GLU(2), nn.Conv2d(2, 2, 1), ContextGating(2))
    assert use_inplace_gates(net) == 1
    assert isinstance(net[0], GLU) and isinstance(net[2], InplaceGate)


def test_original_model_untouched_and_copy_frozen():
    model = small_crnn()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model)
    assert model.state_dict().keys() == state.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])
    assert not fast.training
    assert all(not p.requires_grad for p in fast.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_training_mode_is_refused():
    model = small_crnn().train()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(model)


def test_atst_sed_outputs_unchanged():
    torch.manual_seed(0)
    atst = ATSTFrame(embed_dim=32, depth=2, num_heads=4)
    model = _trained_like(
        ATSTSED(
            atst, n_filters=[4, 8, 8, 8, 8, 8, 8], rnn_hidden=8, fusion_size=16
        )
    )
    gen = torch.Generator().manual_seed(1)
    cnn_mel = torch.randn(2, 128, 160, generator=gen)
    atst_mel = torch.randn(2, 64, 257, generator=gen)
    with torch.no_grad():
        before = model(cnn_mel, atst_mel)
        after = optimize_for_inference(model)(cnn_mel, atst_mel)
    torch.testing.assert_close(after.strong, before.strong, atol=1e-6, rtol=0)
    torch.testing.assert_close(after.weak, before.weak, atol=1e-6, rtol=0)


@pytest.mark.slow  # compiles C++ code
@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a compiler")
def test_compiled_copy_gives_the_same_scores():
    model = small_crnn()
    x = torch.randn(2, 128, 24)
    with torch.no_grad():
        before = model(x).strong
        after = optimize_for_inference(model, compile=True)(x).strong
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
