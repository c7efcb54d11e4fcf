"""Downmixing and resampling: the one audio conversion of the project.

The preparation cache (:mod:`speechbrain_sed_condmix.dataio.prep`) and
``inference.load_audio`` both convert audio with :func:`mono_at_rate`.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import os
import tempfile
from pathlib import Path

import numpy as np  # noqa: F401  (used by the doctest)
import soundfile as sf


def one_thread_per_worker():
    """Process-pool initialiser: torch on one thread in this worker."""
    # Workers run side by side: one thread each avoids oversubscription.
    # Only worker processes call this, so the caller keeps its threads.
    import torch

    torch.set_num_threads(1)


def resample_file(job):
    """Downmix and resample one file into the 16-bit cache.

    ``job`` is ``(source, target, sample_rate)``; the target appears only
    when it is complete.
    """
    source, target, sample_rate = job
    audio, sr = sf.read(source, dtype="float32", always_2d=True)
    wav = mono_at_rate(audio, sr, sample_rate)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write under a temporary name, then rename: a killed run leaves no
    # partial file under the final name.
    fd, tmp = tempfile.mkstemp(
        suffix=".wav", prefix=".part-", dir=target.parent
    )
    os.close(fd)
    try:
        sf.write(tmp, wav.numpy(), sample_rate, subtype="PCM_16")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def mono_at_rate(data, rate, sample_rate):
    """Average the channels of ``data`` and resample it to ``sample_rate``.

    The one downmix and resampling of the project: the preparation cache
    and ``inference.load_audio`` both use it.

    Arguments
    ---------
    data : numpy.ndarray
        float32 ``[samples, channels]``, as ``soundfile.read(...,
        always_2d=True)`` returns it.
    rate : int
        Sample rate of ``data``.
    sample_rate : int
        Output sample rate (``torchaudio.functional.resample``, windowed
        sinc, when it differs).

    Returns
    -------
    torch.Tensor
        float32 ``[samples]``.

    Example
    -------
    >>> stereo = np.ones((8000, 2), dtype=np.float32)
    >>> stereo[:, 1] = 0.0
    >>> wav = mono_at_rate(stereo, 8000, 16000)
    >>> wav.shape, round(float(wav[8000]), 3)
    (torch.Size([16000]), 0.5)
    """
    # torch is imported here so that checks and no-op reruns stay fast.
    import torch
    import torchaudio.functional

    wav = torch.from_numpy(data.mean(axis=1))
    if rate != sample_rate:
        wav = torchaudio.functional.resample(wav, int(rate), int(sample_rate))
    return wav
