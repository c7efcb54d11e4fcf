"""Use a trained model: export it, then detect sound events in audio files.

1. :func:`export_detector` packs one checkpoint of an experiment folder
   (written by ``recipes/DESED/SED/train.py``) into a SpeechBrain source
   folder: ``hyperparams.yaml`` (front end, model, label grid, classes,
   windowing and the tuned post-processing) and ``model.ckpt`` (the EMA
   teacher's weights as a plain model state dict).
2. :class:`SoundEventDetector` loads such a folder the SpeechBrain way::

       detector = SoundEventDetector.from_hparams(
           source="exported/", savedir="pretrained_models/sed"
       )
       events = detector.detect_file("kitchen.flac")

Any file soundfile reads is accepted, at any sample rate (resampled to the
model's rate, 16 kHz in the recipes) and channel count (downmixed by
averaging). The model sees windows of its training clip length (the
encoder's ``audio_duration``: 10 s for DESED, 5 s in ``custom_crnn.yaml``;
ATST-Frame cannot take more than 250 tokens, i.e. 10 s, at once):

* a shorter file is zero-padded to the clip length, as the training clips
  were, and its scores are cut at its real length;
* a longer file is cut into windows every ``window_hop`` seconds (half the
  clip length by default), the last one ending at the end of the file. The
  frame scores are stitched by **centre cropping**: each stretch of the file
  takes the scores of the window whose centre is nearest, so every score
  comes from the middle part of a window, where the bidirectional GRU has
  context on both sides and the window edges (zero context, STFT padding)
  are avoided. Averaging the overlaps instead would mix edge scores into
  every frame. The handover points sit on the frame grid of the earlier
  window; the first frame taken from the next window is shortened to start
  there, so frames keep their exact times and a file made of two 10 s clips
  gets each clip's own scores away from the seam.

A window whose peak amplitude stays below ``silence_peak`` (digital
silence) is not run through the network: its scores are 0. The CNN front
end scales each window by its own min-max, which is undefined on a
constant input, so the network's output there would be arbitrary. A silent
file therefore gives an empty event table.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import copy
import datetime
import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from speechbrain.inference.interfaces import Pretrained

from speechbrain_sed_condmix.csebbs import sebbs_available
from speechbrain_sed_condmix.dataio.resample import mono_at_rate
from speechbrain_sed_condmix.lobes.fusion import optimize_for_inference
from speechbrain_sed_condmix.postprocessing import PostProcessing
from speechbrain_sed_condmix.safe_load import load_checkpoint
from speechbrain_sed_condmix.scores import EVENT_COLUMNS, TIME_DECIMALS

logger = logging.getLogger(__name__)

#: Model weights file of an exported folder (SpeechBrain's
#: ``<loadable>.ckpt`` naming, so ``Pretrainer`` finds it by itself).
MODEL_FILE = "model.ckpt"

#: Hyperparameter file of an exported folder.
HPARAMS_FILE = "hyperparams.yaml"

#: The class list a training run writes into its output folder.
CLASSES_FILE = "classes.txt"

#: Peak amplitude under which a window counts as digital silence
#: (-80 dBFS).
DEFAULT_SILENCE_PEAK = 1e-4

EVENT_TABLE_COLUMNS = [*EVENT_COLUMNS, "score"]


class AudioLoadError(ValueError):
    """An audio file that cannot be used (unreadable, empty, not finite)."""


def load_audio(path, sample_rate=16000):
    """Read an audio file as a mono float waveform at ``sample_rate``.

    Channels are averaged; other sample rates are resampled with
    ``torchaudio.functional.resample`` (windowed sinc).

    Arguments
    ---------
    path : str or pathlib.Path
        Any file soundfile (libsndfile) reads: WAV, FLAC, OGG, MP3, ...
    sample_rate : int
        Output sample rate.

    Returns
    -------
    torch.Tensor
        The waveform, float32, shape ``[samples]``.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    AudioLoadError
        When it cannot be decoded, has no samples or holds NaN/inf; the
        message names the file.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> sf.write(tmp / "a.wav", np.zeros((8000, 2)), 8000)
    >>> load_audio(tmp / "a.wav").shape
    torch.Size([16000])
    >>> sf.write(tmp / "empty.wav", np.zeros(0), 8000)
    >>> try:
    ...     load_audio(tmp / "empty.wav")
    ... except AudioLoadError as err:
    ...     print(err)
    /.../empty.wav: the file holds no audio samples
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioLoadError(f"{path}: cannot read audio ({err})") from err
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioLoadError(f"{path}: the file holds no audio samples")
    if not np.isfinite(data).all():
        raise AudioLoadError(f"{path}: the audio holds NaN or inf samples")
    return mono_at_rate(data, rate, sample_rate).contiguous()


def window_starts(n_samples, window, hop):
    """Start samples of the analysis windows of a signal.

    Windows start every ``hop`` samples while they end before the signal
    does; the last window ends exactly at the end of the signal, so no
    window of a long file is padded. A signal of at most one window gets
    one window at 0.

    Arguments
    ---------
    n_samples : int
        Signal length.
    window : int
        Window length.
    hop : int
        Hop between windows (``0 < hop <= window``).

    Returns
    -------
    list of int
        Sorted start samples.

    Example
    -------
    >>> window_starts(30, 10, 5)
    [0, 5, 10, 15, 20]
    >>> window_starts(25, 10, 5)
    [0, 5, 10, 15]
    >>> window_starts(7, 10, 5)
    [0]
    """
    if not 0 < hop <= window:
        raise ValueError(f"hop must be in (0, {window}], got {hop}")
    if n_samples <= window:
        return [0]
    starts = set(range(0, n_samples - window, hop))
    starts.add(n_samples - window)
    return sorted(starts)


def stitch_window_scores(window_scores, starts, frame_samples, n_samples):
    """Stitch the frame scores of overlapping windows (centre cropping).

    Window ``i`` starts at sample ``starts[i]``; its frame ``j`` spans
    samples ``[starts[i] + j * frame_samples, starts[i] + (j + 1) *
    frame_samples)``. Between two consecutive windows the handover point is
    the midpoint of their centres, moved to the nearest frame boundary of
    the earlier window (and kept inside both). Each window gives the frames
    of its stretch; the first frame after a handover is cut to start at the
    handover. Frames starting at or after ``n_samples`` are dropped and the
    last offset is cut to ``n_samples``.

    Arguments
    ---------
    window_scores : numpy.ndarray
        ``[windows, frames, classes]``.
    starts : sequence of int
        Start sample of each window (increasing).
    frame_samples : int
        Samples per output frame (hop length x pooling).
    n_samples : int
        Length of the signal.

    Returns
    -------
    bounds : numpy.ndarray
        ``[rows + 1]`` frame boundaries, in samples.
    scores : numpy.ndarray
        ``[rows, classes]``.

    Example
    -------
    Two windows of 4 frames of 2 samples, at 0 and 3: the centres are 4
    and 7, the handover 6; window 1's frame [5, 7) is cut to [6, 7).

    >>> scores = np.stack([np.full((4, 1), 1.0), np.full((4, 1), 2.0)])
    >>> bounds, out = stitch_window_scores(scores, [0, 3], 2, 11)
    >>> bounds.tolist(), out[:, 0].tolist()
    ([0, 2, 4, 6, 7, 9, 11], [1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    """
    window_scores = np.asarray(window_scores)
    n_windows, n_frames, _ = window_scores.shape
    if n_windows != len(starts):
        raise ValueError(f"{n_windows} windows of scores, {len(starts)} starts")
    cover = n_frames * frame_samples
    # Stretch of each window: [lows[i], highs[i]).
    highs = []
    for i in range(n_windows - 1):
        start, after = starts[i], starts[i + 1]
        middle = (start + after + cover) / 2  # midpoint of the two centres
        handover = start + round((middle - start) / frame_samples) * (
            frame_samples
        )
        highs.append(min(max(handover, after), start + cover))
    highs.append(starts[-1] + cover)
    lows = [0, *highs[:-1]]
    onsets, offsets, rows = [], [], []
    for i, start in enumerate(starts):
        low, high = lows[i], min(highs[i], n_samples)
        if high <= low:
            continue
        first = max((low - start) // frame_samples, 0)
        last = min(-(-(high - start) // frame_samples), n_frames)
        for j in range(first, last):
            # The first row starts at the handover; with windows that do
            # not overlap it also fills the gap before the window (less
            # than one frame: 10 s is not a whole number of frames).
            onsets.append(low if j == first else start + j * frame_samples)
            offsets.append(min(high, start + (j + 1) * frame_samples))
            rows.append(window_scores[i, j])
    bounds = np.array([*onsets, offsets[-1]], dtype=np.int64)
    return bounds, np.stack(rows)


def _scores_frame(bounds, scores, classes, sample_rate):
    """A sed_scores_eval DataFrame from sample bounds and scores."""
    times = np.round(bounds / float(sample_rate), TIME_DECIMALS)
    data = {"onset": times[:-1], "offset": times[1:]}
    for index, name in enumerate(classes):
        data[name] = scores[:, index].astype(np.float64)
    return pd.DataFrame(data)


def _empty_events():
    return pd.DataFrame(
        {
            "onset": pd.Series(dtype=float),
            "offset": pd.Series(dtype=float),
            "event_label": pd.Series(dtype=object),
            "score": pd.Series(dtype=float),
        }
    )


class SoundEventDetector(Pretrained):
    """Detect sound events with an exported model (SpeechBrain interface).

    Load it with :meth:`from_hparams` from a folder written by
    :func:`export_detector`; see the module docstring for the windowing,
    the stitching and the silence rule.

    Arguments
    ---------
    *args, **kwargs
        Passed to ``speechbrain.inference.interfaces.Pretrained``
        (``modules``, ``hparams``, ``run_opts``, ``freeze_params``).
    method : str, optional
        Post-processing: ``"median"`` or ``"csebbs"``; default: the
        exported one. When the export asks for cSEBB and the optional
        ``sebbs`` package is missing, the median filter path is used with a
        warning.
    window_hop : float, optional
        Seconds between the windows of long files (default: the
        exported ``window_hop``, half the clip length).
    batch_size : int, optional
        Windows per forward pass (default: the exported ``batch_size``).
    optimize : bool
        Run a copy of the model with its batch norms folded into the
        convolutions and channels-last weights
        (:func:`~speechbrain_sed_condmix.lobes.fusion.optimize_for_inference`):
        the same scores (to float rounding), faster on CPU.
        ``self.mods.model`` stays the exported model.
    compile : bool
        Also ``torch.compile`` the optimised copy (opt-in: needs a C++
        compiler on CPU and compiles on the first batch of each shape).

    Example
    -------
    >>> detector = SoundEventDetector.from_hparams(  # doctest: +SKIP
    ...     source="exported/", savedir="pretrained_models/sed")
    >>> detector.detect_file("street.flac")  # doctest: +SKIP
       onset  offset event_label     score
    0  0.512   3.328        Dog  0.873...
    """

    HPARAMS_NEEDED = ["encoder", "postprocessing"]
    MODULES_NEEDED = ["frontend", "model"]

    def __init__(
        self,
        *args,
        method=None,
        window_hop=None,
        batch_size=None,
        optimize=True,
        compile=False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        # The weights are loaded by now (from_hparams runs the pretrainer
        # first), so the optimised copy carries them.
        self.model = self.mods.model
        if optimize or compile:
            self.model = optimize_for_inference(
                self.mods.model,
                fold_bn=optimize,
                channels_last=optimize,
                compile=compile,
            )
        encoder = self.hparams.encoder
        self.classes = list(encoder.classes)
        self.sample_rate = int(encoder.sample_rate)
        self.window_samples = int(
            round(encoder.audio_duration * self.sample_rate)
        )
        self.frame_samples = int(encoder.hop_length * encoder.pooling)
        if window_hop is None:
            window_hop = getattr(
                self.hparams, "window_hop", encoder.audio_duration / 2
            )
        self.hop_samples = int(round(float(window_hop) * self.sample_rate))
        if not 0 < self.hop_samples <= self.window_samples:
            raise ValueError(
                f"window_hop must be in (0, {encoder.audio_duration}] s, "
                f"got {window_hop}"
            )
        self.batch_size = int(
            batch_size or getattr(self.hparams, "batch_size", 8)
        )
        self.silence_peak = float(
            getattr(self.hparams, "silence_peak", DEFAULT_SILENCE_PEAK)
        )
        params = dict(self.hparams.postprocessing)
        if method is None and params.get("method") == "csebbs":
            if not sebbs_available():
                logger.warning(
                    "This model's post-processing is cSEBB, but the optional "
                    "sebbs package is not installed: using the median filter "
                    "and thresholds instead (pip install --no-deps "
                    "sebbs==1.0.2 for cSEBB)."
                )
                method = "median"
        self.postprocessing = PostProcessing.from_dict(params, method=method)
        if self.postprocessing.method == "csebbs" and not sebbs_available():
            from speechbrain_sed_condmix.csebbs import SEBBS_INSTALL_HINT

            raise ImportError(SEBBS_INSTALL_HINT)
        if self.postprocessing.classes != self.classes:
            raise ValueError(
                f"post-processing classes {self.postprocessing.classes} "
                f"differ from the model's {self.classes}"
            )

    # ------------------------------------------------------------------
    # Audio in, frame scores out

    def load_audio(self, path, savedir=None):
        """Read a file as a mono waveform at the model's sample rate.

        Overrides ``Pretrained.load_audio``: any soundfile format, any
        channel count, errors that name the file (see :func:`load_audio`).

        Arguments
        ---------
        path : str or pathlib.Path
            Local audio file.
        savedir : None
            Unused (local files only).

        Returns
        -------
        torch.Tensor
            ``[samples]`` at ``self.sample_rate``.
        """
        return load_audio(path, self.sample_rate)

    def forward(self, wavs):
        """Frame probabilities of a batch of clip-length windows.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` at the model's sample rate, each row one
            window (``encoder.audio_duration`` seconds).

        Returns
        -------
        torch.Tensor
            ``[batch, frames, classes]`` (156 frames of 64 ms for 10 s).
        """
        wavs = wavs.to(self.device).float()
        with torch.no_grad(), self.inference_ctx:
            # The same two steps as validation in SEDBrain: mel, normalize.
            inputs = self.mods.frontend.normalize(self.mods.frontend.mel(wavs))
            inputs = inputs if isinstance(inputs, list) else [inputs]
            output = self.model(*inputs)
        return output.strong.float().transpose(1, 2)

    def _as_waveforms(self, items, sample_rate=None, wav_lens=None):
        """Mono waveforms at the model rate from paths, arrays or a batch."""
        if isinstance(items, torch.Tensor) and items.dim() == 2:
            lengths = (
                torch.ones(len(items)) if wav_lens is None else wav_lens
            ).tolist()
            n = items.shape[1]
            items = [row[: int(round(n * r))] for row, r in zip(items, lengths)]
        elif wav_lens is not None:
            raise ValueError("wav_lens goes with a [batch, samples] tensor")
        if isinstance(items, (str, Path, np.ndarray, torch.Tensor)):
            items = [items]
        waveforms = []
        for item in items:
            if isinstance(item, (str, Path)):
                waveforms.append(self.load_audio(item))
                continue
            wav = torch.as_tensor(item, dtype=torch.float32).detach().cpu()
            if wav.dim() == 2:  # [samples, channels]
                wav = wav.mean(dim=1)
            if wav.dim() != 1 or wav.numel() == 0:
                raise ValueError(
                    f"a waveform must be [samples] or [samples, channels] "
                    f"and not empty, got shape {tuple(wav.shape)}"
                )
            rate = sample_rate or self.sample_rate
            if rate != self.sample_rate:
                import torchaudio.functional

                wav = torchaudio.functional.resample(
                    wav, int(rate), self.sample_rate
                )
            waveforms.append(wav)
        return waveforms

    def _window(self, wav, start):
        """One window of a waveform, zero-padded to the window length."""
        piece = wav[start : start + self.window_samples]
        if len(piece) < self.window_samples:
            # As in training: short clips are zero-padded at the end.
            piece = torch.nn.functional.pad(
                piece, (0, self.window_samples - len(piece))
            )
        return piece

    def raw_frame_scores(self, waveforms):
        """Stitched network scores (no post-processing) of waveforms.

        Windows are cut on the fly, ``batch_size`` at a time, so long
        files need little memory beyond their waveform.

        Arguments
        ---------
        waveforms : list of torch.Tensor
            Mono waveforms at the model's sample rate.

        Returns
        -------
        list of pandas.DataFrame
            sed_scores_eval DataFrames, one per waveform, spanning its
            length (up to the last frame boundary before it).
        """
        plans, jobs = [], []
        for index, wav in enumerate(waveforms):
            starts = window_starts(
                len(wav), self.window_samples, self.hop_samples
            )
            silent = [
                float(wav[s : s + self.window_samples].abs().max())
                < self.silence_peak
                for s in starts
            ]
            plans.append((len(wav), starts, silent))
            jobs.extend(
                (index, s) for s, quiet in zip(starts, silent) if not quiet
            )
        scores = {}
        for first in range(0, len(jobs), self.batch_size):
            chunk = jobs[first : first + self.batch_size]
            batch = torch.stack(
                [self._window(waveforms[i], s) for i, s in chunk]
            )
            for job, values in zip(chunk, self.forward(batch).cpu().numpy()):
                scores[job] = values
        n_frames = self.hparams.encoder.n_frames
        if scores:
            n_frames = next(iter(scores.values())).shape[0]
        frames = []
        for index, (n_samples, starts, silent) in enumerate(plans):
            # Silent windows keep scores of 0 (see the module docstring).
            per_window = np.zeros(
                (len(starts), n_frames, len(self.classes)), dtype=np.float32
            )
            for w, (start, quiet) in enumerate(zip(starts, silent)):
                if not quiet:
                    per_window[w] = scores[(index, start)]
            bounds, stitched = stitch_window_scores(
                per_window, starts, self.frame_samples, n_samples
            )
            frames.append(
                _scores_frame(bounds, stitched, self.classes, self.sample_rate)
            )
        return frames

    def frame_scores(self, path, median_filter=True, sample_rate=None):
        """Frame scores of one file (or waveform) as a sed_scores_eval table.

        Arguments
        ---------
        path : str or pathlib.Path or numpy.ndarray or torch.Tensor
            An audio file, or a waveform (``[samples]`` or ``[samples,
            channels]``) at ``sample_rate``.
        median_filter : bool
            Apply the model's class-wise median filter (as in the recipe's
            evaluation); False gives the network's raw probabilities.
        sample_rate : int, optional
            Sample rate of a waveform input (default: the model's).

        Returns
        -------
        pandas.DataFrame
            Columns ``onset, offset, <classes>``, one row per frame.
        """
        waveforms = self._as_waveforms([path], sample_rate)
        raw = self.raw_frame_scores(waveforms)[0]
        return self.postprocessing.filter(raw) if median_filter else raw

    # ------------------------------------------------------------------
    # Events

    def _events(self, raw):
        values = raw[self.classes].to_numpy()
        if not values.any():  # silence (or a network that says nothing)
            return _empty_events()
        events = self.postprocessing.events(raw)
        return events.reset_index(drop=True)

    def detect_batch(self, items, sample_rate=None, wav_lens=None):
        """Detect events in several files or waveforms.

        Arguments
        ---------
        items : list or torch.Tensor
            Paths, waveforms (``[samples]`` or ``[samples, channels]`` at
            ``sample_rate``), or a padded ``[batch, samples]`` tensor.
        sample_rate : int, optional
            Sample rate of waveform inputs (default: the model's).
        wav_lens : torch.Tensor, optional
            Relative lengths of the rows of a padded batch (SpeechBrain
            convention).

        Returns
        -------
        list of pandas.DataFrame
            One event table (``onset, offset, event_label, score``) per
            item, in seconds from the start of the item.
        """
        waveforms = self._as_waveforms(items, sample_rate, wav_lens)
        return [self._events(raw) for raw in self.raw_frame_scores(waveforms)]

    def detect_file(self, path):
        """Detect events in one audio file.

        Arguments
        ---------
        path : str or pathlib.Path
            Any file soundfile reads.

        Returns
        -------
        pandas.DataFrame
            Columns ``onset, offset, event_label, score`` (seconds; the
            score is the event's highest filtered frame score with the
            median filter, its box confidence with cSEBB), sorted by onset.
        """
        return self.detect_batch([path])[0]

    def analyse_file(self, path):
        """Raw scores, filtered scores and events of one file in one pass.

        Arguments
        ---------
        path : str or pathlib.Path
            Any file soundfile reads.

        Returns
        -------
        dict
            ``raw`` and ``scores`` (median-filtered) sed_scores_eval
            DataFrames and ``events`` (as :meth:`detect_file`).
        """
        raw = self.raw_frame_scores(self._as_waveforms([path]))[0]
        return {
            "raw": raw,
            "scores": self.postprocessing.filter(raw),
            "events": self._events(raw),
        }


# ----------------------------------------------------------------------
# Export


def _yaml():
    import ruamel.yaml

    return ruamel.yaml.YAML()


def _copy_node(node):
    """Copy a ruamel node without its comments, keeping tags."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, dict):
        out = CommentedMap()
        for key, value in node.items():
            out[key] = _copy_node(value)
        tag = getattr(node, "tag", None)
        if tag is not None and getattr(tag, "value", None):
            out.yaml_set_ctag(tag)
        return out
    if isinstance(node, (list, tuple)):
        out = CommentedSeq(_copy_node(v) for v in node)
        tag = getattr(node, "tag", None)
        if tag is not None and getattr(tag, "value", None):
            out.yaml_set_ctag(tag)
        if all(not isinstance(v, (dict, list, tuple)) for v in node):
            out.fa.set_flow_style()
        return out
    return copy.copy(node)


def _tagged_map(tag, items):
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.tag import Tag

    out = CommentedMap(items)
    out.yaml_set_ctag(Tag(suffix=tag))
    return out


def _dump_yaml(tree):
    from hyperpyyaml.core import dump_hyperpyyaml

    stream = io.StringIO()
    dump_hyperpyyaml(tree, stream)
    return stream.getvalue()


def _load_yaml_text(text):
    from hyperpyyaml import load_hyperpyyaml

    return load_hyperpyyaml(text)


def _model_state(checkpoint_dir, weights):
    path = Path(checkpoint_dir) / f"{weights}.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    state = load_checkpoint(path)
    if weights == "teacher":
        # EMATeacher.state_dict(): the network sits under "model."
        prefix = "model."
        stray = [k for k in state if not k.startswith(prefix)]
        if stray:
            raise ValueError(
                f"{path}: not an EMATeacher state dict (keys without "
                f"'{prefix}', e.g. {stray[:3]})"
            )
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def export_detector(
    experiment_folder,
    out_folder,
    checkpoint=None,
    weights="teacher",
    postprocessing=None,
    window_hop=None,
    batch_size=8,
    silence_peak=DEFAULT_SILENCE_PEAK,
    overwrite=False,
):
    """Pack a trained model into a SpeechBrain source folder.

    Reads the experiment's ``hyperparams.yaml`` (the resolved recipe copy
    that ``train.py`` writes) for the front end (``frontend``), the
    network (``student``, whose architecture the teacher shares) and the
    label grid (``encoder``), and one checkpoint for the weights. Writes:

    * ``hyperparams.yaml``: ``encoder`` (classes written out),
      ``frontend``, ``model``, ``modules``, a ``pretrainer`` that loads
      ``model.ckpt``, the windowing (``window_hop``, ``batch_size``,
      ``silence_peak``), ``postprocessing`` and ``export_info``;
    * ``model.ckpt``: the network's plain state dict.

    The post-processing is, in this order: ``postprocessing`` if given,
    the experiment's ``postprocessing.json`` (tuned for the teacher by the
    recipe's test stage; not used for the student), else the recipe's
    ``median_filter`` with threshold 0.5.
    Before anything is written, the new YAML is loaded and the weights are
    loaded into it strictly.

    Arguments
    ---------
    experiment_folder : str or pathlib.Path
        Output folder of a training run.
    out_folder : str or pathlib.Path
        Folder to write (created).
    checkpoint : str or pathlib.Path, optional
        A ``save/CKPT+...`` folder; default: the best one by the
        experiment's ``selection_key`` (the one its test stage used).
    weights : str
        ``"teacher"`` (the EMA teacher, default) or ``"student"``.
    postprocessing : PostProcessing or dict, optional
        Post-processing to store instead of the experiment's.
    window_hop : float, optional
        Seconds between the windows of long files (default: half the
        model's clip length, 5 s for 10 s clips).
    batch_size : int
        Windows per forward pass at inference.
    silence_peak : float
        Peak amplitude under which a window is treated as silence.
    overwrite : bool
        Replace existing files in ``out_folder``.

    Returns
    -------
    pathlib.Path
        ``out_folder``.

    Example
    -------
    >>> out = export_detector(  # doctest: +SKIP
    ...     "results/crnn_mt/42", "exported/crnn_mt")
    >>> sorted(p.name for p in out.iterdir())  # doctest: +SKIP
    ['hyperparams.yaml', 'model.ckpt']
    """
    from speechbrain_sed_condmix.pretrained import find_stage_checkpoint

    experiment = Path(experiment_folder)
    hparams_path = experiment / HPARAMS_FILE
    if not hparams_path.is_file():
        raise FileNotFoundError(
            f"{hparams_path} does not exist: pass the output folder of a "
            "training run (recipes/DESED/SED/train.py)"
        )
    if weights not in ("teacher", "student"):
        raise ValueError(f"weights must be teacher or student: {weights!r}")
    tree = _yaml().load(hparams_path.read_text())
    missing = [k for k in ("encoder", "frontend", "student") if k not in tree]
    if missing:
        raise ValueError(f"{hparams_path} lacks the key(s) {missing}")
    if checkpoint is None:
        checkpoint = find_stage_checkpoint(
            experiment, max_key=tree.get("selection_key")
        )
    checkpoint = Path(checkpoint)
    state = _model_state(checkpoint, weights)

    encoder_node = _copy_node(tree["encoder"])
    class_list = experiment / CLASSES_FILE
    if class_list.is_file():
        # The run's own record: the YAML may read its classes from a file
        # in the data folder, which need not exist any more.
        from speechbrain_sed_condmix.dataio.custom import load_classes

        encoder_node["classes"] = _copy_node(
            load_classes(classes_file=class_list)
        )
    encoder = _load_yaml_text(_dump_yaml({"encoder": encoder_node}))["encoder"]
    # The checkpoint's record of its classes and front end must match.
    from speechbrain_sed_condmix.metadata import ModelMetadata

    frontend = _load_yaml_text(
        _dump_yaml({"frontend": _copy_node(tree["frontend"])})
    )["frontend"]
    ModelMetadata(encoder.classes, frontend, encoder).check_folder(checkpoint)
    encoder_node["classes"] = _copy_node(list(encoder.classes))
    if postprocessing is None:
        tuned = experiment / "postprocessing.json"
        # The recipe tunes the teacher's post-processing only.
        if tuned.is_file() and weights == "teacher":
            postprocessing = PostProcessing.load(tuned)
        else:
            postprocessing = PostProcessing(
                encoder.classes,
                median_filter=_plain_yaml(tree.get("median_filter", 1)),
                info={"tuned": "no: the recipe's median filter, threshold 0.5"},
            )
    elif isinstance(postprocessing, dict):
        postprocessing = PostProcessing.from_dict(postprocessing)
    if postprocessing.classes != list(encoder.classes):
        raise ValueError(
            f"post-processing classes {postprocessing.classes} differ from "
            f"the model's {list(encoder.classes)}"
        )
    window = encoder.audio_duration
    if window_hop is None:
        window_hop = window / 2
    if not 0 < float(window_hop) <= window:
        raise ValueError(f"window_hop must be in (0, {window}] s")

    from hyperpyyaml.core import RefTag

    out_tree = {
        "sample_rate": int(encoder.sample_rate),
        "encoder": encoder_node,
        "frontend": _copy_node(tree["frontend"]),
        "model": _copy_node(tree["student"]),
        "modules": {
            "frontend": RefTag("<frontend>"),
            "model": RefTag("<model>"),
        },
        "pretrainer": _tagged_map(
            "!new:speechbrain.utils.parameter_transfer.Pretrainer",
            {"loadables": {"model": RefTag("<model>")}},
        ),
        "window_hop": float(window_hop),
        "batch_size": int(batch_size),
        "silence_peak": float(silence_peak),
        "postprocessing": postprocessing.to_dict(),
        "export_info": {
            "experiment": str(experiment.resolve()),
            "checkpoint": checkpoint.name,
            "weights": weights,
            "date": datetime.date.today().isoformat(),
        },
    }
    header = (
        "# SoundEventDetector model exported by speechbrain_sed_condmix\n"
        "# (export_detector / sed-export). Load it with\n"
        "#   SoundEventDetector.from_hparams(source=<this folder>, "
        "savedir=...)\n"
        "# or run: sed-detect FILES --model <this folder>\n"
        "# window_hop: seconds between the windows of long files;\n"
        "# silence_peak: peak amplitude under which a window is silence;\n"
        "# postprocessing: median filter (frames) and thresholds, or cSEBB\n"
        "# (needs the optional sebbs package); null merge thresholds are off.\n"
    )
    text = header + _dump_yaml(out_tree)
    # Check the folder before writing it: the YAML loads and the weights
    # fit the model exactly.
    loaded = _load_yaml_text(text)
    try:
        loaded["model"].load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"the {weights} weights of {checkpoint} do not fit the model of "
            f"{hparams_path}: {err}"
        ) from err
    PostProcessing.from_dict(loaded["postprocessing"])

    out = Path(out_folder)
    out.mkdir(parents=True, exist_ok=True)
    targets = [out / HPARAMS_FILE, out / MODEL_FILE]
    existing = [p.name for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out} already holds {existing}; pass overwrite=True "
            "(sed-export --force) to replace them"
        )
    torch.save(state, out / MODEL_FILE)
    (out / HPARAMS_FILE).write_text(text)
    logger.info(
        "Exported the %s of %s to %s", weights, checkpoint, out.resolve()
    )
    return out


def _plain_yaml(value):
    """Plain Python values from ruamel scalars and sequences."""
    if isinstance(value, dict):
        return {str(k): _plain_yaml(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_yaml(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value
