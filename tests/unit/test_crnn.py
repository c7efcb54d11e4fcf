"""Tests of the DCASE CRNN: size, layout, outputs and checkpoint loading.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import numpy as np
import pytest
import torch

from speechbrain_sed_condmix.lobes.crnn import (
    CRNN,
    SEDOutput,
    load_desed_task_state_dict,
)

FILTERS = [16, 32, 64, 128, 128, 128, 128]


def _reference_layout():
    """Keys and shapes of the DCASE 2023 default CRNN (reference §12)."""
    layout = []
    c_in = 1
    for i, c in enumerate(FILTERS):
        layout += [
            (f"cnn.cnn.conv{i}.weight", (c, c_in, 3, 3)),
            (f"cnn.cnn.conv{i}.bias", (c,)),
            (f"cnn.cnn.batchnorm{i}.weight", (c,)),
            (f"cnn.cnn.batchnorm{i}.bias", (c,)),
            (f"cnn.cnn.batchnorm{i}.running_mean", (c,)),
            (f"cnn.cnn.batchnorm{i}.running_var", (c,)),
            (f"cnn.cnn.batchnorm{i}.num_batches_tracked", ()),
            (f"cnn.cnn.glu{i}.linear.weight", (c, c)),
            (f"cnn.cnn.glu{i}.linear.bias", (c,)),
        ]
        c_in = c
    for layer, n_in in ((0, 128), (1, 256)):
        for suffix in ("", "_reverse"):
            layout += [
                (f"rnn.rnn.weight_ih_l{layer}{suffix}", (384, n_in)),
                (f"rnn.rnn.weight_hh_l{layer}{suffix}", (384, 128)),
                (f"rnn.rnn.bias_ih_l{layer}{suffix}", (384,)),
                (f"rnn.rnn.bias_hh_l{layer}{suffix}", (384,)),
            ]
    layout += [
        ("dense.weight", (10, 256)),
        ("dense.bias", (10,)),
        ("dense_softmax.weight", (10, 256)),
        ("dense_softmax.bias", (10,)),
    ]
    return layout


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return CRNN()


def _small(**kwargs):
    cfg = {
        "n_filters": [4, 8, 8],
        "pooling": [(2, 2), (2, 4), (1, 4)],
        "rnn_hidden": 6,
        "n_freq": 32,
        "n_class": 3,
    }
    cfg.update(kwargs)
    return CRNN(**cfg)


def _random_state_dict(model, seed):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        if v.dtype == torch.long:
            out[k] = torch.randint(0, 1000, v.shape, generator=g)
        else:
            out[k] = torch.rand(v.shape, generator=g) + 0.1
    return out


def test_parameter_count(model):
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n == 1_112_420


def test_state_dict_layout(model):
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == _reference_layout()


def test_output_shapes_and_weak_pooling(model):
    model.eval()
    logits = {}

    def keep(name):
        def hook(_module, _inputs, output):
            logits[name] = output.detach().double().numpy()

        return hook

    handles = [
        model.dense.register_forward_hook(keep("strong")),
        model.dense_softmax.register_forward_hook(keep("att")),
    ]
    try:
        with torch.no_grad():
            out = model(torch.rand(2, 128, 626) * 2 - 1)
    finally:
        for h in handles:
            h.remove()
    assert isinstance(out, SEDOutput)
    assert out.strong.shape == (2, 10, 156)
    assert out.weak.shape == (2, 10)
    assert out.embeddings.shape == (2, 156, 256)
    assert model.embedding_dim == 256

    # Independent recomputation of sigmoid + class-softmax attention pooling
    strong = 1.0 / (1.0 + np.exp(-logits["strong"]))  # [B, T, C]
    z = logits["att"] - logits["att"].max(-1, keepdims=True)
    att = np.exp(z) / np.exp(z).sum(-1, keepdims=True)  # softmax over C
    att = np.clip(att, 1e-7, 1.0)
    weak = (strong * att).sum(1) / att.sum(1)
    np.testing.assert_allclose(
        out.strong.numpy(), strong.transpose(0, 2, 1), atol=1e-6
    )
    np.testing.assert_allclose(out.weak.numpy(), weak, atol=1e-6)

    # In eval mode the heads act directly on the embeddings (no dropout)
    with torch.no_grad():
        again = torch.sigmoid(model.dense(out.embeddings)).transpose(1, 2)
    torch.testing.assert_close(again, out.strong)


def test_eval_determinism_and_train_dropout(model):
    x = torch.rand(2, 128, 626) * 2 - 1
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    for u, v in zip(a[:3], b[:3]):
        assert torch.equal(u, v)
    assert a.encoder_embeddings is None  # the CRNN has no encoder branch
    model.train()
    with torch.no_grad():
        c = model(x)
    model.eval()
    assert not torch.allclose(a.strong, c.strong)


def test_backward_reaches_all_parameters():
    m = _small()
    out = m(torch.randn(2, 32, 24))
    (out.strong.sum() + out.weak.sum()).backward()
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize("activation", ["glu", "cg", "relu", "leakyrelu"])
@pytest.mark.parametrize("attention", [True, False])
def test_small_configurations(activation, attention):
    m = _small(activation=activation, attention=attention).eval()
    out = m(torch.randn(2, 32, 24))
    assert out.strong.shape == (2, 3, 6)
    assert out.weak.shape == (2, 3)
    assert out.embeddings.shape == (2, 6, 12)
    assert hasattr(m, "dense_softmax") == attention
    if not attention:
        torch.testing.assert_close(out.weak, out.strong.mean(-1))


def test_frequency_left_over_feeds_the_gru():
    # Frequency pooled to 4 bins: the GRU input is 8 channels x 4 bins.
    m = _small(pooling=[(2, 2), (2, 2), (1, 2)]).eval()
    assert m.rnn.rnn.input_size == 32
    assert m(torch.randn(2, 32, 24)).strong.shape == (2, 3, 6)


def test_frame_mask_excludes_frames():
    m = _small().eval()
    x = torch.randn(2, 32, 24)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[:, 3:] = False
    with torch.no_grad():
        out = m(x, frame_mask=mask)
        full = m(x)
    torch.testing.assert_close(out.strong, full.strong)
    # Same as pooling over the first 3 frames only
    h = full.embeddings[:, :3]
    with torch.no_grad():
        strong = torch.sigmoid(m.dense(h))
        att = torch.softmax(m.dense_softmax(h), -1).clamp(1e-7, 1)
    torch.testing.assert_close(out.weak, (strong * att).sum(1) / att.sum(1))


def test_load_lightning_checkpoint(tmp_path):
    m = CRNN()
    student = _random_state_dict(m, 1)
    teacher = _random_state_dict(m, 2)
    ckpt = {
        "epoch": 3,
        "hyper_parameters": {"net": {"nb_filters": FILTERS}},
        "state_dict": {
            **{f"sed_student.{k}": v for k, v in student.items()},
            **{f"sed_teacher.{k}": v for k, v in teacher.items()},
            # Other modules of the Lightning module are ignored
            "mel_spec.mel_scale.fb": torch.zeros(1025, 128),
        },
    }
    path = tmp_path / "epoch=3.ckpt"
    torch.save(ckpt, path)

    assert load_desed_task_state_dict(m, path, which="teacher") is m
    for k, v in m.state_dict().items():
        assert torch.equal(v, teacher[k]), k
    load_desed_task_state_dict(m, ckpt, which="student")
    for k, v in m.state_dict().items():
        assert torch.equal(v, student[k]), k


def test_load_bare_and_prefixed_dicts():
    m = _small()
    sd = _random_state_dict(m, 3)
    load_desed_task_state_dict(m, sd)
    assert torch.equal(m.dense.weight, sd["dense.weight"])
    sd2 = _random_state_dict(m, 4)
    load_desed_task_state_dict(
        m, {f"sed_student.{k}": v for k, v in sd2.items()}
    )
    assert torch.equal(m.dense.weight, sd2["dense.weight"])


def test_wrong_key_raises_useful_message():
    m = _small()
    sd = {f"sed_student.{k}": v for k, v in _random_state_dict(m, 5).items()}
    sd["sed_student.dense.weightt"] = sd.pop("sed_student.dense.weight")
    with pytest.raises(ValueError) as err:
        load_desed_task_state_dict(m, {"state_dict": sd})
    msg = str(err.value)
    assert "dense.weightt" in msg and "Unexpected" in msg
    assert "'dense.weight'" in msg and "Missing" in msg
    assert "sed_student." in msg

    with pytest.raises(ValueError, match="sed_teacher.*sed_student"):
        load_desed_task_state_dict(m, {"state_dict": sd}, which="teacher")
    with pytest.raises(ValueError, match="which"):
        load_desed_task_state_dict(m, sd, which="ema")


def test_shape_mismatch_raises():
    m = _small()
    sd = _random_state_dict(_small(n_class=4), 6)
    with pytest.raises(ValueError, match="dense.weight"):
        load_desed_task_state_dict(m, sd)
