"""The CNN's lean no-grad eval path (folded batch norm, in-place gates)."""

import pytest
import torch

from speechbrain_sed_condmix.lobes.crnn import CNN, CRNN
from speechbrain_sed_condmix.teacher import EMATeacher


def _trained_stats(model):
    """Give the batch norms non-trivial running statistics and affines."""
    gen = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen))
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                module.weight.copy_(torch.randn(n, generator=gen))
                module.bias.copy_(torch.randn(n, generator=gen))
    return model


@pytest.mark.parametrize("activation", ["glu", "cg", "relu"])
def test_lean_eval_forward_equals_module_by_module(activation):
    torch.manual_seed(0)
    cnn = _trained_stats(
        CNN(n_filters=[4, 8], pooling=[(2, 2), (2, 2)], activation=activation)
    ).eval()
    x = torch.randn(3, 1, 12, 10)
    with torch.no_grad():
        lean = cnn(x)
        reference = cnn.cnn(x)  # the nn.Sequential, module by module
    torch.testing.assert_close(lean, reference, rtol=1e-5, atol=1e-6)
    assert not torch.equal(lean, torch.zeros_like(lean))


def test_lean_path_only_without_grad_and_in_eval():
    torch.manual_seed(0)
    cnn = _trained_stats(CNN(n_filters=[4], pooling=[(2, 2)], dropout=0.0))
    x = torch.randn(2, 1, 8, 6)
    # Training mode: batch statistics, so nothing is folded (exact match).
    with torch.no_grad():
        torch.testing.assert_close(cnn(x), cnn.cnn(x), rtol=0, atol=0)
    # With autograd the module-by-module path runs and gradients flow.
    cnn.eval()
    out = cnn(x.requires_grad_(True))
    out.sum().backward()
    assert x.grad is not None
    # The input is never overwritten by the in-place gates.
    y = torch.randn(2, 1, 8, 6)
    y0 = y.clone()
    with torch.no_grad():
        cnn(y)
    assert torch.equal(y, y0)


def test_teacher_outputs_follow_the_reference_path():
    """EMA teacher (eval mode, no grad) with and without the lean path."""
    torch.manual_seed(0)
    student = _trained_stats(
        CRNN(
            n_filters=[4, 8], pooling=[(2, 4), (2, 4)], rnn_hidden=6, n_freq=16
        )
    )
    teacher = EMATeacher(student)
    x = torch.randn(2, 16, 20)
    lean = teacher(x)
    teacher.model.cnn.lean_inference = False
    reference = teacher(x)
    torch.testing.assert_close(lean.strong, reference.strong)
    torch.testing.assert_close(lean.weak, reference.weak)
    torch.testing.assert_close(lean.embeddings, reference.embeddings)
