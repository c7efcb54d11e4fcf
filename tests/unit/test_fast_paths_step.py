"""The training speed-ups keep the numerics of the code they replace.

One Mean Teacher step (student forward and backward, Adam, EMA teacher
update) with every fast path on is compared with the same step computed
module by module with plain autograd, torch's dropout and a per-parameter
EMA loop. Dropout is 0 so that both draw no random numbers.
"""

import copy

import pytest
import torch

from speechbrain_sed_condmix.lobes.crnn import CRNN
from speechbrain_sed_condmix.lobes.gates import GLU
from speechbrain_sed_condmix.teacher import EMATeacher


@pytest.mark.parametrize("channels_last", [True, False])
def test_fused_glu_matches_the_plain_formula(channels_last):
    torch.manual_seed(0)
    glu = GLU(5)
    x = torch.randn(3, 5, 7, 4)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    grad_out = torch.randn(3, 5, 7, 4)
    out = glu(x)
    out.backward(grad_out)
    got = [x.grad, glu.linear.weight.grad, glu.linear.bias.grad]
    # Reference: the formula written out, differentiated by autograd.
    x_ref = x.detach().clone().requires_grad_(True)
    w = glu.linear.weight.detach().clone().requires_grad_(True)
    b = glu.linear.bias.detach().clone().requires_grad_(True)
    lin = torch.einsum("bchw,dc->bdhw", x_ref, w) + b.view(1, -1, 1, 1)
    ref = lin * torch.sigmoid(x_ref)
    ref.backward(grad_out)
    torch.testing.assert_close(out, ref)
    for g, r in zip(got, [x_ref.grad, w.grad, b.grad]):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def _reference_paths(model):
    """Switch every fast path of a CRNN off."""
    model.cnn.fast_dropout = False
    model.cnn.lean_inference = False
    model.rnn.cpu_threads = None
    for module in model.modules():
        if isinstance(module, GLU):
            module.fused_backward = False
    return model


def _step(student, teacher, x, target, fast):
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    out = student(x)
    with torch.no_grad():
        teacher_out = teacher(x)
    loss = torch.nn.functional.binary_cross_entropy(out.strong, target)
    loss = loss + (out.strong - teacher_out.strong).square().mean()
    loss.backward()
    opt.step()
    if fast:
        teacher.update(student, step=3)
    else:  # the per-parameter EMA loop the foreach update replaced
        alpha = teacher.alpha(3)
        with torch.no_grad():
            pairs = list(zip(teacher.model.parameters(), student.parameters()))
            pairs += [
                (t, s)
                for t, s in zip(teacher.model.buffers(), student.buffers())
                if t.is_floating_point()
            ]
            for t, s in pairs:
                t.mul_(alpha).add_(s, alpha=1.0 - alpha)
            for t, s in zip(teacher.model.buffers(), student.buffers()):
                if not t.is_floating_point():
                    t.copy_(s)
    return loss.detach()


def test_one_training_step_equals_the_reference_computation():
    torch.manual_seed(0)
    student = CRNN(
        n_filters=[4, 8, 8],
        pooling=[(2, 4), (2, 2), (1, 2)],
        rnn_hidden=6,
        n_freq=16,
        dropout=0.0,
    ).to(memory_format=torch.channels_last)
    teacher = EMATeacher(student)
    # Teacher statistics that differ from the defaults, so that the
    # folded batch norm is exercised.
    with torch.no_grad():
        for module in teacher.model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    ref_student = _reference_paths(copy.deepcopy(student))
    ref_teacher = copy.deepcopy(teacher)
    _reference_paths(ref_teacher.model)
    x = torch.randn(4, 16, 24)
    target = torch.rand(4, 10, 6).round()
    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # so that the GRU does switch threads
    try:
        loss = _step(student, teacher, x, target, fast=True)
        ref_loss = _step(ref_student, ref_teacher, x, target, fast=False)
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(loss, ref_loss)

    # A convolution bias followed by a batch norm has a zero gradient in
    # exact arithmetic (the batch norm removes the mean); its computed
    # gradient is rounding noise, which Adam scales to +-lr whatever its
    # size, so those biases are not comparable between two summation
    # orders. Their gradients are checked for being noise instead.
    def noise_bias(name):
        return name.startswith("cnn.cnn.conv") and name.endswith(".bias")

    for (name, p), q in zip(
        student.named_parameters(), ref_student.parameters()
    ):
        if noise_bias(name):
            assert p.grad.abs().max() < 1e-6
            continue
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    for (name, p), q in zip(
        teacher.state_dict().items(), ref_teacher.state_dict().values()
    ):
        if noise_bias(name.removeprefix("model.")):
            continue
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
