"""Tests of the ATST-Frame encoder and of its checkpoint loader.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import argparse
import math
import warnings

import pytest
import torch
from torch.nn import functional as F

from speechbrain_sed_condmix.lobes.atst import (
    ATST_CHECKPOINT_HELP,
    ATSTFrame,
    load_atst_checkpoint,
)

SMALL = {"embed_dim": 64, "depth": 2, "num_heads": 4}


def _small(seed, **kwargs):
    torch.manual_seed(seed)
    return ATSTFrame(**{**SMALL, **kwargs}).eval()


@pytest.fixture(scope="module")
def base():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    return ATSTFrame().eval()


def _documented_shapes(dim=768, depth=12, hidden=3072, tokens=250):
    """The bare FrameAST key table of the reference report."""
    shapes = {
        "mask_embed": (1, 1, dim),
        "pos_embed": (1, tokens + 1, dim),
        "patch_embed.patch_embed.weight": (dim, 256),
        "patch_embed.patch_embed.bias": (dim,),
        "norm_frame.weight": (dim,),
        "norm_frame.bias": (dim,),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        shapes.update(
            {
                p + "norm1.weight": (dim,),
                p + "norm1.bias": (dim,),
                p + "attn.qkv.weight": (3 * dim, dim),
                p + "attn.proj.weight": (dim, dim),
                p + "attn.proj.bias": (dim,),
                p + "norm2.weight": (dim,),
                p + "norm2.bias": (dim,),
                p + "mlp.fc1.weight": (hidden, dim),
                p + "mlp.fc1.bias": (hidden,),
                p + "mlp.fc2.weight": (dim, hidden),
                p + "mlp.fc2.bias": (dim,),
            }
        )
    return shapes


@pytest.mark.slow  # a full-size ATST-Frame (85 M parameters)
def test_base_parameter_count_and_keys(base):
    assert sum(p.numel() for p in base.parameters()) == 85_419_264
    shapes = {k: tuple(v.shape) for k, v in base.state_dict().items()}
    expected = _documented_shapes()
    assert len(expected) == 138
    assert shapes == expected
    assert base.embed_dim == 768


@pytest.mark.slow  # a full-size ATST-Frame (85 M parameters)
def test_base_output_shape_short_input(base):
    with torch.no_grad():
        out = base(torch.randn(1, 64, 43))
    assert out.shape == (1, 10, 768)


@pytest.mark.slow  # a full-size ATST-Frame (85 M parameters)
def test_layer_groups_cover_all_parameters_once(base):
    groups = base.layer_groups()
    names = [name for name, _ in groups]
    assert names == (
        ["embeddings"] + [f"block{i}" for i in range(12)] + ["norm_frame"]
    )
    ids = [id(p) for _, params in groups for p in params]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in base.parameters()}
    emb = {id(p) for p in groups[0][1]}
    assert id(base.pos_embed) in emb and id(base.mask_embed) in emb
    assert {id(p) for p in groups[5][1]} == {
        id(p) for p in base.blocks[4].parameters()
    }


def test_init():
    model = _small(0)
    for name, p in model.state_dict().items():
        if "norm" in name:
            expected = 1.0 if name.endswith("weight") else 0.0
            assert torch.all(p == expected), name
        elif name.endswith("bias"):
            assert torch.all(p == 0), name
        else:  # linear weights and the embeddings: truncated normal
            assert float(p.abs().max()) <= 0.04 + 1e-6, name
            if p.numel() > 1000:
                assert abs(float(p.std()) - 0.018) < 0.004, name


def test_ten_seconds_gives_250_tokens():
    model = _small(0)
    with torch.no_grad():
        out = model(torch.randn(2, 64, 1001))
        out4 = model(torch.randn(2, 1, 64, 1001))
    assert out.shape == (2, 250, 64)
    assert out4.shape == (2, 250, 64)


def test_four_dim_input_equals_three_dim():
    model = _small(0)
    x = torch.randn(2, 64, 22)
    with torch.no_grad():
        assert torch.equal(model(x), model(x.unsqueeze(1)))


def test_too_long_input_raises():
    model = _small(0)
    with pytest.raises(ValueError, match="250") as err:
        model(torch.randn(1, 64, 1004))  # 251 tokens
    assert "chunk" in str(err.value)
    with pytest.raises(ValueError, match="64"):
        model(torch.randn(1, 32, 100))


def _naive_patches(x, patch_frames=4):
    """Token t = the (mel, frame) block x[:, :, 4t:4t+4], mel-major."""
    tokens = []
    for t in range(x.shape[-1] // patch_frames):
        block = x[:, :, t * patch_frames : (t + 1) * patch_frames]
        tokens.append(
            torch.stack(
                [
                    block[:, m, f]
                    for m in range(block.shape[1])
                    for f in range(patch_frames)
                ],
                dim=-1,
            )
        )
    return torch.stack(tokens, dim=1)


def test_patch_embedding_is_frequency_major():
    model = _small(0)
    mel = torch.arange(64.0)[:, None] * 1000.0 + torch.arange(11.0)
    x = torch.stack([mel, -mel])  # [2, 64, 11]: frame 10 is cropped
    seen = []
    hook = model.patch_embed.patch_embed.register_forward_hook(
        lambda mod, inp, out: seen.append(inp[0])
    )
    with torch.no_grad():
        model(x)
    hook.remove()
    tokens = seen[0]
    assert tokens.shape == (2, 2, 256)
    # value at index j of token t: mel j // 4, frame 4 t + j % 4
    j = torch.arange(256.0)
    for t in range(2):
        expected = torch.div(j, 4, rounding_mode="floor") * 1000 + 4 * t + j % 4
        assert torch.equal(tokens[0, t], expected)
        assert torch.equal(tokens[1, t], -expected)
    rand = torch.randn(3, 64, 13)
    assert torch.equal(model.patch_embed.patchify(rand), _naive_patches(rand))


def _naive_attention(attn, x, num_heads):
    batch, n, dim = x.shape
    hd = dim // num_heads
    qkv = x @ attn.qkv.weight.T  # [B, N, 3 * dim], laid out (3, heads, hd)
    q, k, v = qkv.view(batch, n, 3, num_heads, hd).unbind(2)
    out = torch.empty(batch, n, num_heads, hd)
    for h in range(num_heads):
        scores = q[:, :, h] @ k[:, :, h].transpose(1, 2) / math.sqrt(hd)
        out[:, :, h] = torch.softmax(scores, dim=-1) @ v[:, :, h]
    return out.reshape(batch, n, dim) @ attn.proj.weight.T + attn.proj.bias


def test_attention_matches_naive():
    model = _small(0)
    attn = model.blocks[0].attn
    x = torch.randn(2, 9, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            attn(x), _naive_attention(attn, x, 4), atol=1e-5, rtol=1e-5
        )


def test_forward_matches_naive_encoder():
    model = _small(1)
    with torch.no_grad():  # non-trivial norms, to check which one is used
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 64, 30)
    dim = 64

    def ln(h, mod):
        return F.layer_norm(h, (dim,), mod.weight, mod.bias, eps=1e-6)

    with torch.no_grad():
        emb = model.patch_embed.patch_embed
        w, b = emb.weight, emb.bias
        h = _naive_patches(x) @ w.T + b + model.pos_embed[0, 1:8]
        for blk in model.blocks:
            h = h + _naive_attention(blk.attn, ln(h, blk.norm1), 4)
            z = ln(h, blk.norm2) @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias
            z = F.gelu(z) @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
            h = h + z
        expected = ln(h, model.norm_frame)
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_dropout_only_in_training():
    model = _small(0, dropout=0.5)
    x = torch.randn(1, 64, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.allclose(model(x), model(x))


# ----------------------------------------------------------------- loading


def _layout_a(sd):
    """ATST pretraining checkpoint: cls token, final ``norm``, junk."""
    out = {}
    for k, v in sd.items():
        k = k.replace("norm_frame.", "norm.") if k.startswith("norm_") else k
        out["model.teacher.encoder." + k] = v
    out["model.teacher.encoder.cls_token"] = torch.zeros(1, 1, 64)
    out["model.student.projector.0.weight"] = torch.zeros(3, 3)
    out["model.student.encoder.blocks.0.norm1.weight"] = torch.zeros(7)
    out["head.linear.weight"] = torch.zeros(527, 64)
    return out


def _layout_a_frame(sd):
    """ATST-Frame pretraining checkpoint: ``norm_frame`` kept as is."""
    out = {"model.teacher.encoder." + k: v for k, v in sd.items()}
    out["model.teacher.projector.0.weight"] = torch.zeros(3, 3)
    return out


def _layout_b(sd):
    out = {"encoder.encoder.frame_encoder." + k: v for k, v in sd.items()}
    out["encoder.encoder.teacher_module.blocks.0.norm1.weight"] = torch.ones(2)
    out["head.linear.bias"] = torch.zeros(527)
    return out


def _layout_c(sd):
    out = {"encoder.encoder." + k: v for k, v in sd.items()}
    out["head.linear.weight"] = torch.zeros(527, 64)
    out["head.norm.running_mean"] = torch.zeros(64)
    out["head.norm.num_batches_tracked"] = torch.tensor(3)
    return out


def _layout_sed(sd):
    out = {"sed_student.atst_frame.atst." + k: v for k, v in sd.items()}
    # The teacher copy differs and must not be picked up.
    out.update(
        {"sed_teacher.atst_frame.atst." + k: v + 1 for k, v in sd.items()}
    )
    out["sed_student.cnn.cnn.conv0.weight"] = torch.zeros(16, 1, 3, 3)
    return out


def _layout_sed_model(sd):
    out = {"atst_frame.atst." + k: v for k, v in sd.items()}
    out["atst_frame.atst.total_ops"] = torch.zeros(1)
    out["cat_tf.weight"] = torch.zeros(128, 896)
    return out


@pytest.mark.parametrize(
    "layout",
    [
        _layout_a,
        _layout_a_frame,
        _layout_b,
        _layout_c,
        _layout_sed,
        _layout_sed_model,
    ],
)
def test_checkpoint_layouts_load(tmp_path, layout):
    src, dst = _small(0), _small(1)
    x = torch.randn(2, 64, 41)
    with torch.no_grad():
        assert not torch.allclose(src(x), dst(x))
    path = tmp_path / "atst.ckpt"
    torch.save({"state_dict": layout(src.state_dict()), "epoch": 3}, str(path))
    assert load_atst_checkpoint(dst, path) == len(src.state_dict()) == 28
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k


def test_bare_state_dict_and_str_path(tmp_path):
    src, dst = _small(0), _small(1)
    assert load_atst_checkpoint(dst, src.state_dict()) == 28
    assert torch.equal(dst.pos_embed, src.pos_embed)
    path = tmp_path / "bare.pt"
    torch.save(_small(2).state_dict(), str(path))
    assert load_atst_checkpoint(dst, str(path)) == 28
    assert torch.equal(dst.pos_embed, _small(2).pos_embed)


def test_lightning_checkpoint_with_a_namespace_loads_safely(tmp_path):
    """The Namespace of hyper-parameters is on the safe loader's allow-list:
    no opt-in, no warning (tests/unit/test_safe_load.py has the rest)."""
    src, dst = _small(0), _small(1)
    path = tmp_path / "lightning.ckpt"
    ckpt = {
        "state_dict": _layout_c(src.state_dict()),
        "hyper_parameters": {"args": argparse.Namespace(lr=1e-3)},
    }
    torch.save(ckpt, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_atst_checkpoint(dst, path) == 28
    assert torch.equal(dst.norm_frame.weight, src.norm_frame.weight)


def test_wrong_file_lists_missing_and_unexpected(tmp_path):
    crnn_like = {
        "cnn.cnn.conv0.weight": torch.zeros(16, 1, 3, 3),
        "cnn.cnn.batchnorm0.running_mean": torch.zeros(16),
        "rnn.rnn.weight_ih_l0": torch.zeros(384, 128),
        "dense.weight": torch.zeros(10, 256),
    }
    path = tmp_path / "crnn.ckpt"
    torch.save({"state_dict": crnn_like}, str(path))
    with pytest.raises(ValueError) as err:
        load_atst_checkpoint(_small(0), path)
    msg = str(err.value)
    assert "not an ATST-Frame checkpoint" in msg
    assert str(path) in msg
    assert "Missing keys: 28 [" in msg
    assert "blocks.0.attn.qkv.weight" in msg
    assert "(16 more)" in msg  # 28 missing keys, 12 shown
    assert "Unexpected keys: 4 [" in msg
    for key in crnn_like:
        assert key in msg


def test_partial_match_names_the_offending_keys():
    src = _small(0)
    sd = _layout_c(src.state_dict())
    del sd["encoder.encoder.blocks.1.mlp.fc2.bias"]
    sd["encoder.encoder.cls_token"] = torch.zeros(1, 1, 64)
    with pytest.raises(ValueError) as err:
        load_atst_checkpoint(_small(1), {"state_dict": sd})
    msg = str(err.value)
    assert "Missing keys: 1 [blocks.1.mlp.fc2.bias]" in msg
    assert "Unexpected keys: 1 [cls_token]" in msg
    assert "<state dict>" in msg


def test_nothing_matching_in_a_prefixed_checkpoint():
    # Only skipped / ignored keys: the model's keys are all missing.
    sd = {
        "encoder.encoder.teacher_module.pos_embed": torch.zeros(1),
        "head.linear.weight": torch.zeros(2, 2),
    }
    with pytest.raises(ValueError, match="Missing keys: 28"):
        load_atst_checkpoint(_small(0), sd)


def test_two_layouts_in_one_file_are_ambiguous():
    sd = _small(0).state_dict()
    both = {**_layout_c(sd), **_layout_a_frame(sd)}
    with pytest.raises(ValueError, match="Ambiguous"):
        load_atst_checkpoint(_small(1), both)


def test_shape_mismatch_is_reported():
    src = _small(0, max_tokens=100)
    with pytest.raises(ValueError, match="Shape mismatch.*pos_embed"):
        load_atst_checkpoint(_small(1), _layout_c(src.state_dict()))


def test_help_names_the_checkpoint():
    assert "atst_as2M.ckpt" in ATST_CHECKPOINT_HELP
    assert "1_xb0_n3UNbUG_pH1vLHTviLfsaSfCzxz" in ATST_CHECKPOINT_HELP
    assert "github.com/Audio-WestlakeU/ATST-SED" in ATST_CHECKPOINT_HELP
    assert "github.com/Audio-WestlakeU/audiossl" in ATST_CHECKPOINT_HELP
