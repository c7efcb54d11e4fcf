"""The contrastive loss's heads and target network as the references have
them: ATST-Frame's shape, a train-mode target with batch statistics, their
own weight decay, and loading from a pretraining checkpoint.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import logging

import torch

from speechbrain_sed_condmix.augment.mixup import MixInfo
from speechbrain_sed_condmix.lobes.crnn import CRNN
from speechbrain_sed_condmix.losses import EmbeddingContrastiveLoss
from speechbrain_sed_condmix.optim import sed_param_groups


def _bn_target(head, x):
    """The head's output with BatchNorm on the batch's statistics."""
    h = x.reshape(-1, x.shape[-1]) @ head[0].weight.T
    h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + head[1].eps)
    h = torch.relu(h * head[1].weight + head[1].bias)
    return (h @ head[3].weight.T).reshape(*x.shape[:-1], -1)


def test_train_mode_target_uses_batch_statistics():
    torch.manual_seed(0)
    emb = torch.randn(4, 6, 8) * 3 + 2
    info = MixInfo.identity(4)
    train = EmbeddingContrastiveLoss(8, 16, 4, teacher_eval_mode=False).train()
    head = train.teacher_projector.model
    assert head.training
    torch.testing.assert_close(train.target(emb, info), _bn_target(head, emb))
    assert float(head[1].running_mean.abs().sum()) > 0  # its own statistics
    evaluated = EmbeddingContrastiveLoss(8, 16, 4).train()
    assert not evaluated.teacher_projector.model.training
    evaluated.teacher_projector.model.load_state_dict(head.state_dict())
    with torch.no_grad():
        expected = evaluated.teacher_projector.model(emb)
    torch.testing.assert_close(evaluated.target(emb, info), expected)
    assert not torch.allclose(expected, _bn_target(head, emb))


def test_atst_frame_shaped_heads():
    loss = EmbeddingContrastiveLoss(768, hidden_size=4096, projection_size=256)
    assert loss.projector[0].weight.shape == (4096, 768)
    assert loss.predictor[0].weight.shape == (4096, 256)
    assert loss.predictor[3].weight.shape == (256, 4096)


def test_heads_get_their_own_weight_decay():
    model = CRNN(n_filters=[4], pooling=[(2, 16)], rnn_hidden=3, n_freq=16)
    loss = EmbeddingContrastiveLoss(6, 8, 4)
    groups = sed_param_groups(
        model, lr=1e-3, extra_modules=[loss], heads_weight_decay=0.04
    )
    by_name = {g["name"]: g for g in groups}
    head_params = {id(p) for p in loss.parameters() if p.requires_grad}
    decayed = {id(p) for p in by_name["heads"]["params"]}
    plain = {id(p) for p in by_name["heads_no_decay"]["params"]}
    assert decayed | plain == head_params and not decayed & plain
    assert all(p.ndim > 1 for p in by_name["heads"]["params"])
    assert all(p.ndim == 1 for p in by_name["heads_no_decay"]["params"])
    assert by_name["heads"]["weight_decay"] == 0.04
    assert not head_params & {id(p) for p in by_name["rnn"]["params"]}
    # Without a decay the heads stay in the "rnn" group, as before.
    groups = sed_param_groups(model, lr=1e-3, extra_modules=[loss])
    assert [g["name"] for g in groups] == ["cnn", "rnn"]
    torch.optim.Adam(
        sed_param_groups(
            model, lr=1e-3, extra_modules=[loss], heads_weight_decay=0.04
        )
    )


def test_heads_load_from_a_pretraining_checkpoint(tmp_path, caplog):
    torch.manual_seed(1)
    src = EmbeddingContrastiveLoss(8, 16, 4)
    sd = {}
    for k, v in src.projector.state_dict().items():
        sd["model.student.projector." + k] = v + 1.0
    for k, v in src.predictor.state_dict().items():
        sd["model.student.predictor." + k] = v + 2.0
    path = tmp_path / "pretrain.ckpt"
    torch.save({"state_dict": sd}, path)
    dst = EmbeddingContrastiveLoss(8, 16, 4)
    with caplog.at_level(logging.INFO):
        status = dst.load_heads(path)
    assert status == {
        "student_projector": f"loaded from {path}",
        "student_predictor": f"loaded from {path}",
        "teacher_projector": f"loaded from {path}",
    }
    assert f"loaded from {path}" in caplog.text
    for k, v in dst.projector.state_dict().items():
        assert torch.equal(v, sd["model.student.projector." + k]), k
        # No teacher head in the file: the EMA projector starts as the
        # student projector.
        assert torch.equal(dst.teacher_projector.model.state_dict()[k], v), k
    for k, v in dst.predictor.state_dict().items():
        assert torch.equal(v, sd["model.student.predictor." + k]), k
    with caplog.at_level(logging.INFO):
        assert set(dst.load_heads(None).values()) == {"random"}
    assert "student_projector random" in caplog.text


def test_crnn_exposes_its_cnn_output_as_a_tap():
    import pytest

    from speechbrain_sed_condmix.objectives import EmbeddingContrastiveTerm

    torch.manual_seed(0)
    model = CRNN(
        n_filters=[4, 6],
        pooling=[(1, 4), (2, 4)],
        rnn_hidden=3,
        n_freq=16,
        n_class=2,
    ).eval()
    seen = {}
    model.rnn.register_forward_hook(
        lambda mod, args, out: seen.setdefault("gru_input", args[0])
    )
    out = model(torch.randn(2, 16, 8))
    assert out.cnn_embeddings.shape == (2, 4, 6)
    assert torch.equal(out.cnn_embeddings, seen["gru_input"])
    assert EmbeddingContrastiveTerm(embedding_tap="cnn").embedding_tap == (
        "cnn_embeddings"
    )
    assert EmbeddingContrastiveTerm(embedding_tap="bigru").embedding_tap == (
        "embeddings"
    )
    with pytest.raises(ValueError, match="embedding_tap 'gru'"):
        EmbeddingContrastiveTerm(embedding_tap="gru")
    # The contrastive loss runs on the CNN tap.
    loss = EmbeddingContrastiveLoss(6, 8, 4)
    info = MixInfo(
        lam=torch.tensor([0.9, 0.6]),
        partner=torch.tensor([1, 0]),
        mixed=torch.tensor([True, True]),
        composition=torch.tensor([False, True]),
        perturbation=torch.tensor([True, False]),
    )
    value = loss(out.cnn_embeddings, out.cnn_embeddings.detach(), info)
    assert 0 <= float(value.detach()) <= 4
