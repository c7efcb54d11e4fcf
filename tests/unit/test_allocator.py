"""The CPU allocator settings change where memory comes from, not results.

Two fresh processes train the same CRNN for two steps (dropout on, so the
random draws count too): one configured as ``train.py`` configures itself,
one with huge pages off and glibc's defaults. Their losses and weights must
be bitwise equal.
"""

import json
import os
import subprocess
import sys

import pytest

from speechbrain_sed_condmix.allocator import (
    GLIBC_SETTINGS,
    THP_ENV,
    configure_cpu_allocator,
)

TRAIN_TWO_STEPS = """
import hashlib, json, sys
if sys.argv[1] == "configured":
    from speechbrain_sed_condmix.allocator import configure_cpu_allocator
    applied = configure_cpu_allocator()
else:
    applied = {}
import torch
from speechbrain_sed_condmix.lobes.crnn import CRNN

torch.manual_seed(0)
torch.set_num_threads(1)
model = CRNN(n_filters=[16, 32], pooling=[(2, 4), (2, 32)], rnn_hidden=8)
model = model.to(memory_format=torch.channels_last)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
# [4, 16, 626, 128] maps: 20 MB each, well above the 2 MiB huge-page size.
x = torch.randn(4, 128, 626)
target = torch.rand(4, 10, 156).round()
losses = []
for _ in range(2):
    out = model(x)
    loss = torch.nn.functional.binary_cross_entropy(out.strong, target)
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item().hex())
digest = hashlib.sha256()
for value in model.state_dict().values():
    digest.update(value.detach().contiguous().numpy().tobytes())
print(json.dumps({"applied": applied, "losses": losses,
                  "weights": digest.hexdigest()}))
"""


def _run(mode):
    env = {
        k: v
        for k, v in os.environ.items()
        if k != THP_ENV and not k.startswith("MALLOC_")
    }
    if mode == "plain":
        env[THP_ENV] = "0"
    out = subprocess.run(
        [sys.executable, "-c", TRAIN_TWO_STEPS, mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two fresh processes that import torch
def test_training_is_bitwise_identical_with_the_allocator_settings():
    configured = _run("configured")
    plain = _run("plain")
    assert configured["applied"][THP_ENV] == "1"
    assert plain["applied"] == {}
    assert configured["losses"] == plain["losses"]
    assert configured["weights"] == plain["weights"]


def test_user_settings_win_and_the_rest_is_filled_in():
    env = {THP_ENV: "0", "MALLOC_TOP_PAD_": "0"}
    applied = configure_cpu_allocator(env)
    assert env[THP_ENV] == "0" and THP_ENV not in applied
    assert env["MALLOC_TOP_PAD_"] == "0" and "MALLOC_TOP_PAD_" not in applied
    if sys.platform == "linux":  # glibc: mallopt accepts the other two
        for _, name, value in GLIBC_SETTINGS:
            if name != "MALLOC_TOP_PAD_":
                assert applied[name] == env[name] == str(value)
    # A second call changes nothing: everything is set now.
    assert configure_cpu_allocator(env) == {}
