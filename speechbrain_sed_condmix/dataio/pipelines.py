"""SpeechBrain datasets and data pipelines for SED manifests.

Every subset gives the same output keys, so that strong, weak and unlabeled
items can share one ``PaddedBatch``: ``sig`` (mono 16 kHz audio, padded or
cropped to the clip length), ``strong_labels`` ``[C, T]``, ``weak_labels``
``[C]`` and the booleans ``is_strong`` / ``is_weak`` that mask the losses.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import random

import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset

from speechbrain_sed_condmix.dataio.desed import load_manifest

#: Output keys of every SED dataset.
SED_OUTPUT_KEYS = (
    "id",
    "sig",
    "strong_labels",
    "weak_labels",
    "is_strong",
    "is_weak",
    "duration",
)


def fit_to_length(sig, length, random_crop=False):
    """Zero-pad or crop a 1-D signal to ``length`` samples.

    Arguments
    ---------
    sig : torch.Tensor
        Signal of shape ``[T]``.
    length : int
        Target number of samples.
    random_crop : bool
        Crop a random window of a longer signal (else its start).

    Returns
    -------
    sig : torch.Tensor
        Signal of shape ``[length]``.
    offset : int
        First kept sample of the input (0 unless cropped).

    Example
    -------
    >>> out, offset = fit_to_length(torch.ones(3), 5)
    >>> out.tolist(), offset
    ([1.0, 1.0, 1.0, 0.0, 0.0], 0)
    """
    n = sig.shape[0]
    if n == length:
        return sig, 0
    if n < length:
        return torch.nn.functional.pad(sig, (0, length - n)), 0
    offset = random.randint(0, n - length) if random_crop else 0
    return sig[offset : offset + length], offset


def shift_events(events, shift, duration):
    """Shift events by ``-shift`` seconds and clip them to ``[0, duration]``.

    Events that end up empty are dropped.

    Arguments
    ---------
    events : list
        ``(onset, offset, label)`` triples.
    shift : float
        Start of the cropped window, in seconds.
    duration : float
        Length of the window.

    Returns
    -------
    list of tuple
        The events inside the window, in window time.

    Example
    -------
    >>> shift_events([(1.0, 3.0, "a"), (0.0, 0.5, "b")], 0.8, 10.0)
    [(0.2, 2.2, 'a')]
    """
    kept = []
    for onset, offset, label in events:
        onset = max(round(onset - shift, 6), 0.0)
        offset = min(round(offset - shift, 6), duration)
        if offset > onset:
            kept.append((onset, offset, label))
    return kept


def make_sed_dataset(manifest, encoder, train=False, sample_rate=16000):
    """Build a ``DynamicItemDataset`` from a manifest of ``prepare_desed``.

    Arguments
    ---------
    manifest : str or Path
        A ``<subset>.json`` manifest.
    encoder : FrameLabelEncoder
        Encoder that turns events into frame targets.
    train : bool
        Training mode: clips longer than the encoder's ``audio_duration`` are
        cropped at a random position (else at their start).
    sample_rate : int
        Sample rate of the cached audio.

    Returns
    -------
    DynamicItemDataset or SkipBadAudio
        Dataset with the keys in ``SED_OUTPUT_KEYS``; a training dataset is
        wrapped in :class:`SkipBadAudio` (which adds ``bad_audio``).

    Example
    -------
    >>> from speechbrain_sed_condmix.dataio.encoder import FrameLabelEncoder
    >>> # prepare_desed's outputs for the run's tiny mini-DESED (conftest.py)
    >>> _, paths = getfixture("prepared_tiny")
    >>> from speechbrain_sed_condmix.dataio.layout import DESED_CLASSES
    >>> encoder = FrameLabelEncoder(DESED_CLASSES)
    >>> ds = make_sed_dataset(paths["synth_val"], encoder)
    >>> item = ds[0]
    >>> item["sig"].shape, item["strong_labels"].shape
    (torch.Size([160000]), torch.Size([10, 156]))
    """
    length = int(round(encoder.audio_duration * sample_rate))
    dataset = DynamicItemDataset(load_manifest(manifest))

    @sb.utils.data_pipeline.takes("wav", "events", "labels", "kind")
    @sb.utils.data_pipeline.provides(
        "sig", "strong_labels", "weak_labels", "is_strong", "is_weak"
    )
    def sed_pipeline(wav, events, labels, kind):
        """Audio, strong and weak label tensors and row kind of a clip."""
        sig = sb.dataio.dataio.read_audio(wav)
        if sig.dim() > 1:  # the cache is mono, but stay safe for other data
            sig = sig.mean(dim=-1)
        n_samples = sig.shape[0]
        sig, offset = fit_to_length(sig, length, random_crop=train)
        yield sig
        shift = offset / sample_rate
        window = min(n_samples - offset, length) / sample_rate
        if kind == "strong":
            kept = shift_events(events, shift, window)
            yield encoder.encode_strong(kept, duration=window)
            yield encoder.encode_weak([label for _, _, label in kept])
        else:
            yield torch.zeros(encoder.n_classes, encoder.n_frames)
            yield encoder.encode_weak(labels)
        # Plain bools: PaddedBatch stacks them into a bool tensor.
        yield kind == "strong"
        yield kind == "weak"

    dataset.add_dynamic_item(sed_pipeline)
    dataset.set_output_keys(list(SED_OUTPUT_KEYS))
    return SkipBadAudio(dataset) if train else dataset


class SkipBadAudio(torch.utils.data.Dataset):
    """A training dataset that steps over clips that fail to load.

    A clip whose audio cannot be read or decoded (a truncated or corrupt
    file, a file removed after the preparation), or holds NaN or infinite
    samples, is replaced by the next clip of the same subset, so that the
    batch keeps its composition. Every item carries ``bad_audio``, the list
    of ``"<path>: <error>"`` it stepped over (usually empty); ``SEDBrain``
    counts them, warns, and stops the run with the list once there are more
    than ``max_bad_audio``. Counting in the Brain rather than here works
    with loader worker processes.

    Arguments
    ---------
    dataset : DynamicItemDataset
        A dataset of ``make_sed_dataset`` (its items have a ``wav`` path).
    max_tries : int
        Consecutive clips tried before giving up on an item.

    Example
    -------
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> ds = DynamicItemDataset({"a": {"wav": "missing.wav"},
    ...                          "b": {"wav": "ok.wav"}})
    >>> @sb.utils.data_pipeline.takes("wav")
    ... @sb.utils.data_pipeline.provides("sig")
    ... def read(wav):
    ...     if wav == "missing.wav":
    ...         raise RuntimeError("cannot decode")
    ...     return torch.zeros(2)
    >>> ds.add_dynamic_item(read)
    >>> ds.set_output_keys(["id", "sig"])
    >>> item = SkipBadAudio(ds)[0]
    >>> item["id"], item["bad_audio"]
    ('b', ['missing.wav: RuntimeError: cannot decode'])
    """

    def __init__(self, dataset, max_tries=10):
        self.dataset = dataset
        self.max_tries = int(max_tries)

    def __len__(self):
        return len(self.dataset)

    def _source(self, index):
        data_id = self.dataset.data_ids[index]
        return self.dataset.data[data_id].get("wav", data_id)

    def __getitem__(self, index):
        failed = []
        n = len(self.dataset)
        for k in range(min(n, self.max_tries)):
            j = (index + k) % n
            try:
                item = dict(self.dataset[j])
            except Exception as err:  # any decoding error of any backend
                failed.append(f"{self._source(j)}: {type(err).__name__}: {err}")
                # The pipeline resets its generators only after a success;
                # a half-run one would answer the next item with nothing.
                for dynamic_item in self.dataset.pipeline.dynamic_items:
                    dynamic_item.reset()
                continue
            sig = item.get("sig")
            if torch.is_tensor(sig) and not bool(torch.isfinite(sig).all()):
                # NaN or Inf samples (float WAV files can hold them) would
                # poison the batch norms' running statistics: skip the clip.
                failed.append(f"{self._source(j)}: non-finite samples")
                continue
            item["bad_audio"] = failed
            return item
        raise RuntimeError(
            f"{len(failed)} consecutive clips failed to load:\n  "
            + "\n  ".join(failed)
        )
