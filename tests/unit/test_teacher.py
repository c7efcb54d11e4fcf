"""Tests of the Mean Teacher EMA wrapper.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer
from torch import nn

from speechbrain_sed_condmix.lobes.crnn import CRNN, SEDOutput
from speechbrain_sed_condmix.teacher import EMATeacher


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _set_params(module, value):
    with torch.no_grad():
        for i, p in enumerate(module.parameters()):
            p.fill_(value + i)


def _bn_net():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))


def test_ema_over_three_steps_by_hand():
    student = nn.Linear(2, 2).double()
    teacher = EMATeacher(student, decay=0.999)
    alphas = [teacher.alpha(s) for s in (0, 1, 2)]
    assert alphas == pytest.approx([0.0, 0.5, 2.0 / 3.0], abs=1e-15)

    def check(expected):
        for p, e in zip(teacher.model.parameters(), expected):
            torch.testing.assert_close(p, torch.full_like(p, e))

    # Parameter i (weight, bias) of the student is set to value + i.
    _set_params(teacher.model, -1.0)  # start away from the student
    _set_params(student, 3.0)
    teacher.update(student, step=0)  # alpha 0: plain copy
    check([3.0, 4.0])
    _set_params(student, 5.0)
    teacher.update(student, step=1)  # alpha 1/2
    check([0.5 * 3.0 + 0.5 * 5.0, 0.5 * 4.0 + 0.5 * 6.0])  # 4, 5
    _set_params(student, 10.0)
    teacher.update(student, step=2)  # alpha 2/3
    check([2 / 3 * 4.0 + 1 / 3 * 10.0, 2 / 3 * 5.0 + 1 / 3 * 11.0])  # 6, 7


def test_alpha_capped_at_decay():
    teacher = EMATeacher(nn.Linear(1, 1).double(), decay=0.999)
    assert teacher.alpha(10**6) == 0.999
    assert teacher.alpha(999) == pytest.approx(0.999)
    assert teacher.alpha(998) < 0.999
    assert teacher.alpha(100) == pytest.approx(1 - 1 / 101)

    student = nn.Linear(1, 1).double()
    teacher = EMATeacher(student, decay=0.999)
    _set_params(teacher.model, 1.0)
    _set_params(student, 2.0)
    teacher.update(student, step=10**6)
    w = teacher.model.weight
    torch.testing.assert_close(w, torch.full_like(w, 0.999 + 0.001 * 2.0))


def test_deterministic_updates():
    student = _bn_net()
    t1, t2 = EMATeacher(student), EMATeacher(student)
    for step in range(3):
        _set_params(student, float(step))
        t1.update(student, step)
        t2.update(student, step)
    for a, b in zip(t1.state_dict().values(), t2.state_dict().values()):
        assert torch.equal(a, b)


def test_buffer_modes():
    student = _bn_net()
    plain = EMATeacher(student, buffers="keep")
    copying = EMATeacher(student, buffers="copy")
    averaging = EMATeacher(student)
    assert averaging.buffers == "ema"
    assert EMATeacher(student, eval_mode=False).buffers == "keep"
    with pytest.raises(ValueError):
        EMATeacher(student, buffers="other")
    start = student[1].running_mean.clone()
    student.train()
    student(torch.randn(8, 3) * 3 + 1)
    averaging.update(student, step=1)  # alpha = 1/2
    assert torch.allclose(
        averaging.model[1].running_mean,
        0.5 * start + 0.5 * student[1].running_mean,
    )
    assert torch.equal(
        averaging.model[1].num_batches_tracked,
        student[1].num_batches_tracked,
    )
    before = {k: v.clone() for k, v in plain.model.named_buffers()}
    student.train()
    student(torch.randn(8, 3) * 3 + 1)  # moves the running stats
    plain.update(student, step=5)
    copying.update(student, step=5)
    for k, v in plain.model.named_buffers():
        assert torch.equal(v, before[k]), k
    for (k, v), s in zip(copying.model.named_buffers(), student.buffers()):
        assert torch.equal(v, s), k
    assert not torch.equal(student[1].running_mean, before["1.running_mean"])


def test_no_grads():
    student = _bn_net()
    teacher = EMATeacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    out = teacher(torch.randn(4, 3, requires_grad=True))
    assert not out.requires_grad
    assert teacher.model is not student


def test_wrapped_student_is_unwrapped():
    student = nn.Linear(2, 2).double()
    wrapped = nn.DataParallel(student)  # stands in for DDP: has .module
    teacher = EMATeacher(wrapped)
    assert isinstance(teacher.model, nn.Linear)
    _set_params(student, 7.0)
    teacher.update(wrapped, step=0)
    assert torch.equal(teacher.model.weight, student.weight)


def test_eval_mode_default_survives_train():
    teacher = EMATeacher(_bn_net())
    teacher.train()
    assert teacher.training and not teacher.model.training
    x = torch.randn(6, 3)
    bn = teacher.model[1]
    stats = bn.running_mean.clone()
    a, b = teacher(x), teacher(x)
    assert torch.equal(a, b)  # dropout off, running stats used
    assert torch.equal(bn.running_mean, stats)  # not updated
    teacher.eval()
    assert torch.equal(teacher(x), a)
    # A parent module's train() (as Brain's modules.train()) cannot undo it
    parent = nn.ModuleDict({"teacher": teacher})
    parent.train()
    assert not teacher.model.training


def test_eval_mode_false_follows_parent():
    teacher = EMATeacher(_bn_net(), eval_mode=False)
    parent = nn.ModuleDict({"teacher": teacher})
    parent.train()
    assert teacher.model.training
    x = torch.randn(6, 3)
    bn = teacher.model[1]
    stats = bn.running_mean.clone()
    a, b = teacher(x), teacher(x)
    assert not torch.equal(a, b)  # dropout active
    assert not torch.equal(bn.running_mean, stats)  # BN updates its stats
    parent.eval()
    assert not teacher.model.training
    assert torch.equal(teacher(x), teacher(x))


def test_crnn_teacher_outputs():
    student = CRNN(
        n_filters=[4, 8],
        pooling=[(2, 4), (2, 8)],
        rnn_hidden=4,
        n_freq=32,
        n_class=3,
    )
    teacher = EMATeacher(student)
    out = teacher(torch.randn(2, 32, 16))
    assert isinstance(out, SEDOutput)
    assert out.strong.shape == (2, 3, 4)
    assert not out.strong.requires_grad


def test_checkpointer_round_trip(tmp_path):
    student = _bn_net()
    teacher = EMATeacher(student)
    _set_params(student, 2.0)
    teacher.update(student, step=3)
    saved = {k: v.clone() for k, v in teacher.state_dict().items()}

    ckpt = Checkpointer(tmp_path, recoverables={"teacher": teacher})
    ckpt.save_checkpoint()

    # Recover into a fresh teacher built from another student
    fresh = EMATeacher(_bn_net())
    Checkpointer(
        tmp_path, recoverables={"teacher": fresh}
    ).recover_if_possible()
    assert saved.keys() == fresh.state_dict().keys()
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert not any(p.requires_grad for p in fresh.parameters())


def test_foreach_update_equals_the_per_parameter_loop():
    """The multi-tensor EMA gives bit for bit what the per-parameter loop
    ``t.mul_(alpha).add_(s, alpha=1 - alpha)`` gives, buffers included."""
    from speechbrain_sed_condmix.lobes.crnn import CRNN

    torch.manual_seed(0)
    student = CRNN(
        n_filters=[4, 8], pooling=[(2, 4), (2, 4)], rnn_hidden=6, n_freq=16
    ).to(memory_format=torch.channels_last)
    teacher = EMATeacher(student, buffers="ema")
    student(torch.randn(3, 16, 20))  # moves the BN running statistics
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    expected_p = [p.clone() for p in teacher.model.parameters()]
    expected_b = [b.clone() for b in teacher.model.buffers()]
    alpha = teacher.alpha(7)
    for t, s in zip(expected_p, student.parameters()):
        t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
    for t, s in zip(expected_b, student.buffers()):
        if t.is_floating_point():
            t.mul_(alpha).add_(s, alpha=1.0 - alpha)
        else:
            t.copy_(s)
    teacher.update(student, step=7)
    for got, want in zip(teacher.model.parameters(), expected_p):
        assert torch.equal(got, want)
    for got, want in zip(teacher.model.buffers(), expected_b):
        assert torch.equal(got, want)
    assert int(teacher.model.cnn.cnn.batchnorm0.num_batches_tracked) == 1
