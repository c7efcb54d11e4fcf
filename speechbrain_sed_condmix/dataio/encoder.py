"""Frame-level label encoding and decoding for sound event detection.

The default grid is that of the DCASE Task 4 CRNN: 16 kHz audio, a hop of 256
samples and a network that pools time by 4, so 10 s of audio give 156 label
frames of 64 ms. Onsets are floored and offsets ceiled onto that grid, as in
the reference encoder.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import math

import numpy as np
import torch


class FrameLabelEncoder:
    """Encode events into frame targets and decode frame scores into events.

    Arguments
    ---------
    classes : sequence of str
        Event classes, in output order (the YAML's ``classes``): the
        number of model outputs, targets and metrics follows from it.
    audio_duration : float
        Length in seconds of the (padded or cropped) clips the model sees.
    sample_rate : int
        Sample rate of the front end.
    hop_length : int
        Hop of the front end, in samples.
    pooling : int
        Total time pooling of the network.

    Example
    -------
    >>> enc = FrameLabelEncoder(["bark", "chime", "tap"])
    >>> enc.n_frames, round(enc.frame_duration, 3)
    (156, 0.064)
    >>> y = enc.encode_strong([(0.1, 0.5, "bark")])
    >>> y.shape
    torch.Size([3, 156])
    >>> y[0].nonzero().flatten().tolist()  # frames 1..7: 0.064 s to 0.512 s
    [1, 2, 3, 4, 5, 6, 7]
    >>> FrameLabelEncoder(["bark"], audio_duration=5.0).n_frames
    78
    """

    def __init__(
        self,
        classes,
        audio_duration=10.0,
        sample_rate=16000,
        hop_length=256,
        pooling=4,
    ):
        self.classes = list(classes)
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"Duplicate class names in {self.classes}")
        self.class_to_index = {c: i for i, c in enumerate(self.classes)}
        self.audio_duration = float(audio_duration)
        self.sample_rate = int(sample_rate)
        self.hop_length = int(hop_length)
        self.pooling = int(pooling)
        # Same integer arithmetic as the reference: frames of the front end,
        # then the network's pooling, both floored.
        n_feat = int(self.audio_duration * self.sample_rate / self.hop_length)
        self.n_frames = int(n_feat / self.pooling)
        self.frame_duration = self.hop_length * self.pooling / self.sample_rate

    @property
    def n_classes(self):
        """Number of event classes."""
        return len(self.classes)

    def time_to_frame(self, seconds):
        """Convert a time in seconds to a fractional frame index.

        The result is clipped to ``[0, n_frames]``.

        Arguments
        ---------
        seconds : float
            Time in seconds.

        Returns
        -------
        float
            Fractional frame position.

        Example
        -------
        >>> FrameLabelEncoder(["a"]).time_to_frame(0.128)
        2.0
        """
        frame = seconds / self.frame_duration
        return float(min(max(frame, 0.0), self.n_frames))

    def frame_to_time(self, frame):
        """Convert a frame index (or array of them) to seconds.

        Times are clipped to ``[0, audio_duration]``.

        Arguments
        ---------
        frame : int, float or numpy.ndarray
            Frame index or indices.

        Returns
        -------
        float or numpy.ndarray
            Time(s) in seconds.

        Example
        -------
        >>> FrameLabelEncoder(["a"]).frame_to_time(156)
        9.984
        """
        times = np.clip(
            np.asarray(frame, dtype=float) * self.frame_duration,
            0.0,
            self.audio_duration,
        )
        # Rounding removes float noise such as 0.064 * 3 = 0.19200000000000003.
        times = np.round(times, 6)
        return float(times) if times.ndim == 0 else times

    def timestamps(self, n_frames=None):
        """Return the ``n_frames + 1`` frame boundaries in seconds.

        This is the timestamp vector that sed_scores_eval score DataFrames use.

        Arguments
        ---------
        n_frames : int, optional
            Number of frames; defaults to ``self.n_frames``.

        Returns
        -------
        numpy.ndarray
            Boundaries ``0, 0.064, ..., 9.984`` for the default grid.

        Example
        -------
        >>> ts = FrameLabelEncoder(["a"]).timestamps()
        >>> len(ts), float(ts[-1])
        (157, 9.984)
        """
        n = self.n_frames if n_frames is None else int(n_frames)
        return np.round(np.arange(n + 1) * self.frame_duration, 6)

    def encode_strong(self, events, duration=None):
        """Encode strong labels into a ``[n_classes, n_frames]`` target.

        Arguments
        ---------
        events : iterable
            ``(onset, offset, label)`` triples in seconds. A ``None`` or empty
            label (a clip without events) is skipped.
        duration : float, optional
            Duration of the clip; events are clipped to it, so that nothing is
            marked in the zero padding of a short clip.

        Returns
        -------
        torch.Tensor
            Float tensor of shape ``[n_classes, n_frames]`` with 1 inside
            events.

        Example
        -------
        >>> enc = FrameLabelEncoder(classes=["a", "b"])
        >>> y = enc.encode_strong([(0.0, 0.2, "b")])
        >>> y[1, :5].tolist()
        [1.0, 1.0, 1.0, 1.0, 0.0]
        """
        limit = self.audio_duration
        if duration is not None:
            limit = min(limit, float(duration))
        target = torch.zeros(self.n_classes, self.n_frames)
        for onset, offset, label in events:
            if label is None or label == "" or _is_nan(label):
                continue
            index = self._index(label)
            onset, offset = max(float(onset), 0.0), min(float(offset), limit)
            if offset <= onset:
                continue
            start = int(math.floor(self.time_to_frame(onset)))
            stop = int(math.ceil(self.time_to_frame(offset)))
            target[index, start:stop] = 1.0
        return target

    def encode_weak(self, labels):
        """Encode clip-level labels into a multi-hot ``[n_classes]`` vector.

        Arguments
        ---------
        labels : str or iterable of str
            Labels, or one comma-separated string as in DESED's ``weak.tsv``.

        Returns
        -------
        torch.Tensor
            Float multi-hot vector.

        Example
        -------
        >>> FrameLabelEncoder(classes=["a", "b", "c"]).encode_weak("c,a")
        tensor([1., 0., 1.])
        """
        if isinstance(labels, str):
            labels = [lab for lab in labels.split(",") if lab.strip()]
        target = torch.zeros(self.n_classes)
        for label in labels:
            target[self._index(label.strip())] = 1.0
        return target

    def _index(self, label):
        try:
            return self.class_to_index[label]
        except KeyError:
            raise ValueError(
                f"Unknown label {label!r}; known classes: {self.classes}"
            ) from None


def _is_nan(value):
    return isinstance(value, float) and math.isnan(value)
