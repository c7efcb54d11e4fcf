"""Tests of the ATST-Frame-shaped heads and of loading them from a
checkpoint in the ATST-Frame pretraining layout.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import logging

import pytest
import torch

from speechbrain_sed_condmix.lobes.atst import (
    ATSTFrame,
    load_atst_checkpoint,
    load_atst_heads,
    load_heads_into,
)
from speechbrain_sed_condmix.lobes.heads import ATSTFrameHead, MLPHead

SMALL = {"embed_dim": 32, "depth": 1, "num_heads": 4, "max_tokens": 8}
SEQUENTIAL_KEYS = [
    "0.weight",
    "1.weight",
    "1.bias",
    "1.running_mean",
    "1.running_var",
    "1.num_batches_tracked",
    "3.weight",
]


def _trained_head(seed, input_size, hidden, out):
    """A head with non-default BN statistics and weights."""
    torch.manual_seed(seed)
    head = MLPHead(input_size, hidden, out).train()
    with torch.no_grad():
        for _ in range(3):
            head(torch.randn(6, 5, input_size) * 2 + 1)
        head[1].weight.uniform_(0.5, 1.5)
        head[1].bias.normal_()
    return head


def _pretraining_ckpt(dim=32, hidden=64, out=16, with_teacher_head=True):
    """A Lightning-style checkpoint laid out as ATST-Frame pretraining."""
    torch.manual_seed(1)
    student, teacher = ATSTFrame(**SMALL), ATSTFrame(**SMALL)
    heads = {
        "student_projector": _trained_head(2, dim, hidden, out),
        "student_predictor": _trained_head(3, out, hidden, out),
    }
    if with_teacher_head:
        heads["teacher_projector"] = _trained_head(4, dim, hidden, out)
    sd = {}
    for k, v in student.state_dict().items():
        sd["model.student.encoder." + k] = v
    for k, v in teacher.state_dict().items():
        sd["model.teacher.encoder." + k] = v
    for name, head in heads.items():
        branch, part = name.split("_")
        for k, v in head.state_dict().items():
            sd[f"model.{branch}.{part}.{k}"] = v
    return {"state_dict": sd, "hyper_parameters": {"arch": "tiny"}}, heads


def test_head_has_the_atst_frame_layout():
    head = ATSTFrameHead(768)
    assert list(head.state_dict()) == SEQUENTIAL_KEYS
    assert head[0].weight.shape == (4096, 768) and head[0].bias is None
    assert isinstance(head[1], torch.nn.BatchNorm1d)
    assert head[1].num_features == 4096
    assert isinstance(head[2], torch.nn.ReLU)
    assert head[3].weight.shape == (256, 4096) and head[3].bias is None
    assert len(head) == 4  # no BatchNorm on the output
    predictor = ATSTFrameHead(256)
    assert predictor[0].weight.shape == (4096, 256)


def test_head_batchnorm_acts_on_flattened_frames():
    torch.manual_seed(0)
    head = MLPHead(4, hidden_size=6, output_size=3).train()
    x = torch.randn(2, 5, 4)
    out = head(x)
    # Independent computation: BN over the 10 frames of the batch.
    h = x.reshape(10, 4) @ head[0].weight.T
    mean, var = h.mean(0), h.var(0, unbiased=False)
    h = (h - mean) / torch.sqrt(var + head[1].eps)
    h = torch.relu(h * head[1].weight + head[1].bias)
    torch.testing.assert_close(out, (h @ head[3].weight.T).reshape(2, 5, 3))
    # The running mean follows the frame statistics (momentum 0.1).
    torch.testing.assert_close(head[1].running_mean, 0.1 * mean)


def test_legacy_net_keys_still_load():
    src = _trained_head(0, 4, 6, 3)
    legacy = {"net." + k: v for k, v in src.state_dict().items()}
    dst = MLPHead(4, 6, 3)
    dst.load_state_dict(legacy, strict=True)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    assert dst.net is dst


def test_heads_load_from_pretraining_layout_file(tmp_path, caplog):
    ckpt, saved = _pretraining_ckpt()
    path = tmp_path / "atst_frame_pretrain.ckpt"
    torch.save(ckpt, path)
    found = load_atst_heads(path)
    assert sorted(found) == sorted(saved)
    targets = {
        "student_projector": MLPHead(32, 64, 16),
        "student_predictor": MLPHead(16, 64, 16),
        "teacher_projector": MLPHead(32, 64, 16),
    }
    with caplog.at_level(logging.INFO):
        status = load_heads_into(targets, found, str(path))
    assert status == dict.fromkeys(targets, f"loaded from {path}")
    assert f"loaded from {path}" in caplog.text
    for name, head in targets.items():
        ref = saved[name].state_dict()
        got = head.state_dict()
        assert list(got) == SEQUENTIAL_KEYS
        for k in SEQUENTIAL_KEYS:
            assert torch.equal(got[k], ref[k]), (name, k)
    assert int(targets["student_projector"][1].num_batches_tracked) == 3


def test_encoder_and_heads_in_one_call(tmp_path, caplog):
    ckpt, saved = _pretraining_ckpt(with_teacher_head=False)
    path = tmp_path / "pretrain.ckpt"
    torch.save(ckpt, path)
    model = ATSTFrame(**SMALL)
    projector, teacher_projector = MLPHead(32, 64, 16), MLPHead(32, 64, 16)
    before = teacher_projector[0].weight.clone()
    with caplog.at_level(logging.INFO):
        n = load_atst_checkpoint(
            model,
            path,
            heads={
                "student_projector": projector,
                "teacher_projector": teacher_projector,
            },
        )
    assert n == len(model.state_dict())
    teacher_sd = ckpt["state_dict"]
    assert torch.equal(
        model.pos_embed, teacher_sd["model.teacher.encoder.pos_embed"]
    )
    saved_projector = saved["student_projector"]
    assert torch.equal(projector[0].weight, saved_projector[0].weight)
    # No teacher projector in the file: it stays as it was, said "random".
    assert torch.equal(teacher_projector[0].weight, before)
    assert "teacher_projector random" in caplog.text


def test_no_heads_in_a_fine_tuned_checkpoint():
    enc = ATSTFrame(**SMALL)
    ckpt = {
        "state_dict": {
            "encoder.encoder." + k: v for k, v in enc.state_dict().items()
        }
    }
    assert load_atst_heads(ckpt) == {}
    head = MLPHead(32, 64, 16)
    assert load_heads_into({"student_projector": head}, {}, "f.ckpt") == {
        "student_projector": "random"
    }


def test_head_size_mismatch_names_file_and_head():
    ckpt, _ = _pretraining_ckpt()
    with pytest.raises(ValueError, match=r"student_projector of f\.ckpt"):
        load_heads_into(
            {"student_projector": MLPHead(32, 128, 16)},
            load_atst_heads(ckpt),
            "f.ckpt",
        )
    with pytest.raises(ValueError, match="Unknown ATST-Frame head"):
        load_heads_into({"projector": MLPHead(32, 64, 16)}, {}, "f.ckpt")
