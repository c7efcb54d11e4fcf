"""The GRU run with fewer intra-op threads computes what nn.GRU computes."""

import torch

from speechbrain_sed_condmix.lobes.rnn import (
    BidirectionalGRU,
    intra_op_threads,
    run_with_threads,
)


def test_single_threaded_gru_equals_plain_gru_forward_and_backward():
    torch.manual_seed(0)
    gru = BidirectionalGRU(6, 5, num_layers=2, cpu_threads=1)
    x = torch.randn(3, 7, 6, requires_grad=True)
    grad_out = torch.randn(3, 7, 10)
    with intra_op_threads(2):  # so that the GRU does switch to 1 thread
        out = gru(x)
        out.backward(grad_out)
        assert torch.get_num_threads() == 2
    # Reference: the same nn.GRU called directly.
    x_ref = x.detach().clone().requires_grad_(True)
    ref, _ = gru.rnn(x_ref)
    params = list(gru.rnn.parameters())
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    ref.backward(grad_out)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x.grad, x_ref.grad)
    for g, p in zip(grads, params):
        torch.testing.assert_close(g, p.grad)


def test_threads_are_set_inside_and_restored():
    seen = []

    def spy(x):
        seen.append(torch.get_num_threads())
        return x * 2.0

    x = torch.ones(3, requires_grad=True)
    with intra_op_threads(2):
        y = run_with_threads(spy, 1, x, [])
        y.sum().backward()
        assert torch.get_num_threads() == 2
    assert seen == [1]
    torch.testing.assert_close(x.grad, torch.full((3,), 2.0))


def test_frozen_gru_gives_no_parameter_gradients():
    gru = BidirectionalGRU(4, 3, cpu_threads=1).requires_grad_(False)
    x = torch.randn(2, 5, 4, requires_grad=True)
    with intra_op_threads(2):
        gru(x).sum().backward()
    assert x.grad is not None
    assert all(p.grad is None for p in gru.parameters())
