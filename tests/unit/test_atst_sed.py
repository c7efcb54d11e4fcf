"""ATST-SED fusion model, stage-1 freezing and stage-2 learning rates."""

import math

import pytest
import torch

from speechbrain_sed_condmix.lobes.atst import ATSTFrame
from speechbrain_sed_condmix.lobes.atst_sed import ATSTSED
from speechbrain_sed_condmix.optim import sed_param_groups
from speechbrain_sed_condmix.pretrained import load_pretrained
from speechbrain_sed_condmix.teacher import EMATeacher


def tiny(atst_trainable=False, seed=0):
    torch.manual_seed(seed)
    atst = ATSTFrame(embed_dim=32, depth=2, num_heads=4)
    return ATSTSED(
        atst,
        n_filters=[4, 8, 8, 8, 8, 8, 8],
        rnn_hidden=8,
        fusion_size=16,
        atst_trainable=atst_trainable,
    )


@pytest.fixture(scope="module")
def base():
    return ATSTSED(ATSTFrame())


@pytest.mark.slow  # a full-size ATST-Frame (85 M parameters)
def test_base_parameter_counts_and_reference_shapes(base):
    n_atst = sum(p.numel() for p in base.atst_frame.parameters())
    n_all = sum(p.numel() for p in base.parameters())
    assert n_atst == 85_419_264
    # reference: CNN 612,688 + cat_tf 114,816 + BiGRU 494,592 + heads 5,140
    assert n_all - n_atst == 1_227_236
    sd = base.state_dict()
    assert sd["cat_tf.weight"].shape == (128, 896)
    assert sd["rnn.rnn.weight_ih_l1"].shape == (384, 256)
    assert sd["cnn.cnn.conv3.weight"].shape == (128, 64, 3, 3)
    assert sd["cnn.cnn.cg0.linear.weight"].shape == (16, 16)
    assert sd["dense_softmax.weight"].shape == (10, 256)
    assert sd["atst_frame.atst.pos_embed"].shape == (1, 251, 768)
    atst_keys = [k for k in sd if k.startswith("atst_frame.atst.")]
    assert len(atst_keys) == 138


def test_fusion_pools_tokens_to_cnn_frames():
    model = tiny().eval()
    cnn_in = torch.randn(2, 128, 626)
    atst_in = torch.randn(2, 64, 1001)
    out = model(cnn_in, atst_in)
    assert out.strong.shape == (2, 10, 156)
    assert out.encoder_embeddings.shape == (2, 250, 32)
    # independent recomputation of the fusion input of frame 0
    with torch.no_grad():
        tokens = model.atst_frame.atst(atst_in)
        pooled = torch.nn.functional.adaptive_avg_pool1d(
            tokens.transpose(1, 2), 156
        ).transpose(1, 2)
        # adaptive pooling of 250 -> 156: frame 0 averages tokens 0 and 1
        assert torch.allclose(pooled[:, 0], tokens[:, :2].mean(1), atol=1e-6)
        cnn = model.cnn(cnn_in.unsqueeze(1).transpose(2, 3))
        cnn = cnn.squeeze(-1).transpose(1, 2)
        fused = model.cat_tf(torch.cat([cnn, pooled], -1))
        emb = model.rnn(fused)
    assert torch.allclose(emb, out.embeddings, atol=1e-5)
    # the ATST input changes the output (the branch is used)
    other = model(cnn_in, torch.randn(2, 64, 1001))
    assert not torch.allclose(other.strong, out.strong)


def test_stage1_optimizer_step_leaves_atst_untouched():
    model = tiny(atst_trainable=False)
    model.train()
    assert not model.atst_frame.training  # frozen encoder stays in eval
    before = {k: v.clone() for k, v in model.atst_frame.state_dict().items()}
    others = {
        k: v.clone()
        for k, v in model.state_dict().items()
        if not k.startswith("atst_frame")
    }
    groups = sed_param_groups(model, lr=1e-3)
    assert [g["name"] for g in groups] == ["cnn", "rnn"]
    opt = torch.optim.Adam(groups)
    out = model(torch.randn(2, 128, 626), torch.randn(2, 64, 1001))
    out.strong.mean().backward()
    assert all(p.grad is None for p in model.atst_frame.parameters())
    opt.step()
    for k, v in model.atst_frame.state_dict().items():
        assert torch.equal(v, before[k]), k
    changed = [
        k
        for k, v in model.state_dict().items()
        if k in others
        and v.is_floating_point()
        and not torch.equal(v, others[k])
    ]
    assert any(k.startswith("cnn.") for k in changed)
    assert any(k.startswith("rnn.") for k in changed)


def test_stage2_learning_rate_groups():
    model = ATSTSED(ATSTFrame(embed_dim=32, depth=12, num_heads=4))
    model.set_atst_trainable(True)
    groups = sed_param_groups(
        model, lr=2e-3, cnn_lr=2e-4, atst_lr=2e-4, atst_lr_decay=0.5
    )
    names = [g["name"] for g in groups]
    assert names[:2] == ["cnn", "rnn"]
    atst = groups[2:]
    assert [g["name"] for g in atst] == [
        "atst_norm_frame",
        *[f"atst_block{i}" for i in range(11, -1, -1)],
        "atst_embeddings",
    ]
    for i, group in enumerate(atst):
        assert math.isclose(group["lr"], 2e-4 * 0.5**i)
    assert math.isclose(atst[1]["lr"], 1e-4)  # block 11
    assert math.isclose(atst[-1]["lr"], 2e-4 * 0.5**13)
    assert groups[0]["lr"] == 2e-4 and groups[1]["lr"] == 2e-3
    # every trainable parameter is in exactly one group
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    # cat_tf and the heads train with the RNN
    rnn_ids = {id(p) for p in groups[1]["params"]}
    assert id(model.cat_tf.weight) in rnn_ids
    assert id(model.dense.weight) in rnn_ids


def test_load_pretrained_paths(tmp_path):
    student = tiny()
    teacher = EMATeacher(student)
    with pytest.raises(ValueError, match="atst_ckpt"):
        load_pretrained(student, teacher)
    assert "random" in load_pretrained(student, teacher, atst_random_init=True)
    # an ATST-Frame checkpoint in the fine-tuned layout loads in both models
    source = ATSTFrame(embed_dim=32, depth=2, num_heads=4)
    state = {f"encoder.encoder.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "atst.ckpt")
    load_pretrained(student, teacher, atst_ckpt=tmp_path / "atst.ckpt")
    for model in (student, teacher.model):
        for k, v in source.state_dict().items():
            assert torch.equal(model.atst_frame.atst.state_dict()[k], v)
    # a stage-1 result loads student and teacher strictly
    ckpt = tmp_path / "stage1" / "save" / "CKPT+2026"
    ckpt.mkdir(parents=True)
    trained = tiny(seed=1)
    trained_teacher = EMATeacher(tiny(seed=2))
    torch.save(trained.state_dict(), ckpt / "student.ckpt")
    torch.save(trained_teacher.state_dict(), ckpt / "teacher.ckpt")
    stage2 = tiny(atst_trainable=True, seed=3)
    stage2_teacher = EMATeacher(stage2)
    load_pretrained(stage2, stage2_teacher, stage1_ckpt=tmp_path / "stage1")
    for k, v in trained.state_dict().items():
        assert torch.equal(stage2.state_dict()[k], v)
    for k, v in trained_teacher.state_dict().items():
        assert torch.equal(stage2_teacher.state_dict()[k], v)
    assert stage2.atst_trainable  # loading keeps the stage-2 setting
    with pytest.raises(FileNotFoundError, match="student.ckpt"):
        load_pretrained(stage2, stage2_teacher, stage1_ckpt=tmp_path)
