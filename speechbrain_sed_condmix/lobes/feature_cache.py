"""An opt-in disk cache of the front end's linear mel, one file per clip.

A small model on a CPU spends a large share of each training step in the
STFT of the front end, although the clips do not change from one epoch (or
one run) to the next. :class:`FeatureCache` computes each clip's linear mel
once, stores it in fp16 (one ``.npy`` per clip and mel), and reads it back
afterwards. Mixup, the log and the scaling run after the cache on the
linear mel exactly as without it, so only the front end's STFT is skipped.

A clip is found by the content of its waveform (a BLAKE2 digest of its
samples), not by its name: a clip cropped at another position, or edited on
disk, is a new entry and can never be served stale features. Each front
end has its own sub-folder, named by a digest of its mel on a fixed probe
signal, so two front ends with different settings never share entries.
Several runs may share one folder at the same time: files are written
through a temporary name and renamed.

fp16 keeps 11 significant bits: a relative error of at most 2**-12 after
rounding, about 0.002 dB. Its range (normal numbers over 9 decades) is
wider than what the front ends keep of a clip (the CNN front end clamps to
130 dB, i.e. 6.5 decades of magnitude; the ATST one keeps 80 dB of power),
and each stored mel is scaled by a power of two that puts its maximum just
under fp16's largest value, so the scaling itself is exact.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import hashlib
import os
import weakref
from pathlib import Path

import numpy as np
import torch

#: Headroom under fp16's largest finite value (65504) for a clip's maximum.
_FP16_TOP = 2.0**15


def _digest(array, size=16):
    """Hex BLAKE2b digest of a contiguous array's bytes."""
    data = np.ascontiguousarray(array)
    return hashlib.blake2b(data.tobytes(), digest_size=size).hexdigest()


class FeatureCache:
    """Compute each clip's linear mel once, then read it from disk.

    Arguments
    ---------
    folder : str, Path or None
        Cache root, shared by every run on the same data. None disables the
        cache: :meth:`mel` then calls the front end directly.

    Example
    -------
    >>> from speechbrain_sed_condmix.lobes.features import CNNMelFrontEnd
    >>> frontend = CNNMelFrontEnd()
    >>> cache = FeatureCache(getfixture("tmp_path") / "mels")
    >>> wav = torch.randn(2, 4000)
    >>> first = cache.mel(wav, frontend)   # computed and stored
    >>> again = cache.mel(wav, frontend)   # read back
    >>> cache.hits, cache.misses
    (2, 2)
    >>> live = frontend.mel(wav)
    >>> bool(((again - live).abs() <= 1e-3 * live.abs() + 1e-6).all())
    True
    >>> FeatureCache(None).mel(wav, frontend).equal(live)  # disabled
    True
    """

    def __init__(self, folder=None):
        self.folder = None if folder in (None, "", "null") else Path(folder)
        self.hits = 0
        self.misses = 0
        # Weak keys: a new front end may reuse a collected one's id().
        self._frontends = weakref.WeakKeyDictionary()

    @property
    def enabled(self):
        """bool: whether a folder is set."""
        return self.folder is not None

    def _frontend_info(self, frontend):
        """The front end's sub-folder, and whether its mel is one tensor."""
        if frontend not in self._frontends:
            # The mel of a fixed probe captures every setting that changes
            # the mel (rates, windows, filterbanks, the formula itself).
            probe = torch.Generator().manual_seed(0)
            wav = torch.randn(1, 4096, generator=probe)
            with torch.no_grad():
                mels = frontend.mel(wav)
            single = torch.is_tensor(mels)
            mels = [mels] if single else list(mels)
            parts = [type(frontend).__name__.encode()]
            parts += [m.float().cpu().numpy().tobytes() for m in mels]
            name = hashlib.blake2b(b"|".join(parts), digest_size=8)
            self._frontends[frontend] = (self.folder / name.hexdigest(), single)
        return self._frontends[frontend]

    def mel(self, wavs, frontend):
        """The front end's ``mel(wavs)``, from the cache where possible.

        A clip computed in this call is returned as it will be read back
        (through fp16), so that a run gives the same features whether the
        cache was empty or full when it started.

        Arguments
        ---------
        wavs : torch.Tensor
            Waveforms, ``[batch, samples]``.
        frontend : torch.nn.Module
            A front end with ``mel`` (one tensor, or a list of tensors).

        Returns
        -------
        torch.Tensor or list of torch.Tensor
            As ``frontend.mel(wavs)``: fp32, on the device of ``wavs``.
        """
        if not self.enabled:
            return frontend.mel(wavs)
        folder, single = self._frontend_info(frontend)
        samples = wavs.detach().float().cpu().numpy()
        paths = [
            folder / (key := _digest(row))[:2] / f"{key}.npz" for row in samples
        ]
        stored = [self._load(path) for path in paths]
        missing = [i for i, mels in enumerate(stored) if mels is None]
        if missing:
            with torch.no_grad():
                fresh = frontend.mel(wavs[missing])
            fresh = [fresh] if torch.is_tensor(fresh) else list(fresh)
            for row, i in enumerate(missing):
                arrays = self._encode([m[row] for m in fresh])
                self._save(paths[i], arrays)
                stored[i] = self._decode(arrays)
        self.misses += len(missing)
        self.hits += len(paths) - len(missing)
        out = [
            torch.stack([mels[k] for mels in stored]).to(wavs.device)
            for k in range(len(stored[0]))
        ]
        return out[0] if single else out

    @staticmethod
    def _encode(mels):
        """``{"mel<k>": fp16 array, "exp<k>": its power-of-two scale}``."""
        arrays = {}
        for k, mel in enumerate(mels):
            values = mel.detach().float().cpu().numpy()
            peak = float(np.abs(values).max(initial=0.0))
            # A power of two: the scaling adds no rounding of its own.
            exp = 0 if peak == 0 else int(np.floor(np.log2(_FP16_TOP / peak)))
            arrays[f"mel{k}"] = np.ldexp(values, exp).astype(np.float16)
            arrays[f"exp{k}"] = np.array(exp)
        return arrays

    @staticmethod
    def _decode(arrays):
        """The fp32 mels of :meth:`_encode`'s arrays."""
        return [
            torch.from_numpy(
                np.ldexp(
                    arrays[f"mel{k}"].astype(np.float32),
                    -int(arrays[f"exp{k}"]),
                ).astype(np.float32)
            )
            for k in range(len(arrays) // 2)
        ]

    @classmethod
    def _load(cls, path):
        """The stored fp32 mels of a clip, or None if not stored yet."""
        try:
            with np.load(path) as stored:
                return cls._decode({k: stored[k] for k in stored.files})
        except FileNotFoundError:
            return None

    @staticmethod
    def _save(path, arrays):
        """Write a clip's arrays through a temporary file (atomic)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
