"""Use a trained model: detect sound events in audio files and streams.

1. A detector folder is written by :func:`export_detector` (``sed-export``,
   :mod:`speechbrain_sed_condmix.export`) from a training run, or by
   ``sed-import`` (:mod:`speechbrain_sed_condmix.importing`) from a released
   DESED_task or ATST-SED checkpoint: ``hyperparams.yaml``, ``model.ckpt``
   and a ``README.md`` model card (:mod:`speechbrain_sed_condmix.model_folder`).
2. :class:`SoundEventDetector` loads such a folder the SpeechBrain way::

       detector = SoundEventDetector.from_hparams(
           source="exported/", savedir="pretrained_models/sed"
       )
       events = detector.detect_file("kitchen.flac")
       for event in detector.stream(chunks, hop=1.0):  # live audio
           print(event)

   Nothing in the folder is built before it is checked: its files against
   the model card's sha256s, then its YAML against an allow-list of the
   classes that the package's folders use
   (:func:`~speechbrain_sed_condmix.folder_check.check_folder`);
   ``trust_remote_code=True`` loads a folder that names others.

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

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from speechbrain.inference.interfaces import Pretrained

from speechbrain_sed_condmix.csebbs import sebbs_available
from speechbrain_sed_condmix.dataio.resample import mono_at_rate

# export_detector lives in export.py; it stays importable from here.
from speechbrain_sed_condmix.export import CLASSES_FILE, export_detector
from speechbrain_sed_condmix.folder_check import check_folder
from speechbrain_sed_condmix.lobes.fusion import optimize_for_inference
from speechbrain_sed_condmix.model_folder import (
    CARD_FILE,
    DEFAULT_SILENCE_PEAK,
    HPARAMS_FILE,
    MODEL_FILE,
)
from speechbrain_sed_condmix.postprocessing import PostProcessing
from speechbrain_sed_condmix.scores import EVENT_COLUMNS, TIME_DECIMALS
from speechbrain_sed_condmix.windowing import (
    stitch_window_scores,
    window_starts,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CARD_FILE",
    "CLASSES_FILE",
    "DEFAULT_SILENCE_PEAK",
    "HPARAMS_FILE",
    "MODEL_FILE",
    "AudioLoadError",
    "SoundEventDetector",
    "export_detector",
    "load_audio",
    "stitch_window_scores",
    "window_starts",
]

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


def _scores_frame(bounds, scores, classes, sample_rate):
    """A sed_scores_eval DataFrame from sample bounds and scores."""
    times = np.round(bounds / float(sample_rate), TIME_DECIMALS)
    data = {"onset": times[:-1], "offset": times[1:]}
    for index, name in enumerate(classes):
        data[name] = scores[:, index].astype(np.float64)
    return pd.DataFrame(data)


def _fetched_folder(source, hparams_file, options):
    """The local folder whose files ``from_hparams`` will read.

    SpeechBrain's ``fetch`` with the loader's own options: a file already
    in ``savedir`` is used as it is, so that is the one to check; a remote
    source is downloaded first. The card and weights are fetched too.
    """
    from speechbrain.utils.fetching import FetchFrom, fetch, guess_source

    keys = ("savedir", "local_strategy", "fetch_config")
    options = {k: options[k] for k in keys if k in options}
    local = Path(fetch(hparams_file, source, **options)).parent
    where, path = guess_source(source)
    for name in (CARD_FILE, MODEL_FILE):
        if where == FetchFrom.LOCAL and not (Path(path) / name).exists():
            continue
        try:
            fetch(name, source, **options)
        except (OSError, ValueError):  # no card: checked without one
            pass
    return local


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
        # A causal model (lobes.causal) scores whole recordings in one pass
        # and streams with its state (causal_streaming), without windows.
        self.causal = bool(getattr(self.mods.model, "causal", False))
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

    @classmethod
    def from_hparams(cls, source, *args, trust_remote_code=False, **kwargs):
        """Load a detector folder (``Pretrained.from_hparams``), checked.

        Before anything is parsed or built (:func:`~speechbrain_sed_condmix.
        folder_check.check_folder`): ``hyperparams.yaml`` and ``model.ckpt``
        are checked against the model card's sha256s, then the YAML's tags
        against the allow-list of :mod:`speechbrain_sed_condmix.safe_yaml`.
        The files checked are those the load reads: SpeechBrain's
        ``fetch`` links them into ``savedir`` (and downloads a remote
        source) first, and a file already there is the one it uses.

        Arguments
        ---------
        source : str or pathlib.Path
            The folder (or any SpeechBrain source).
        *args, **kwargs
            Passed to ``Pretrained.from_hparams`` (``savedir``,
            ``run_opts``, ``overrides``, and this class's ``method``,
            ``window_hop``, ``batch_size``, ``optimize``, ``compile``).
        trust_remote_code : bool
            Load a folder whose YAML names classes or functions outside the
            allow-list (they can run any code); the log names them.

        Returns
        -------
        SoundEventDetector
            The loaded detector.

        Raises
        ------
        speechbrain_sed_condmix.model_folder.ModelFileMismatchError
            When a file is not the one the card describes.
        speechbrain_sed_condmix.safe_yaml.UntrustedYAMLError
            When the YAML names targets outside the allow-list.
        """
        name = kwargs.get("hparams_file", args[0] if args else HPARAMS_FILE)
        check_folder(
            _fetched_folder(source, name, kwargs),
            trust_remote_code=trust_remote_code,
            overrides=kwargs.get("overrides"),
            hparams_file=name,
        )
        return super().from_hparams(str(source), *args, **kwargs)

    def stream(
        self,
        chunks,
        hop=1.0,
        look_ahead=None,
        sample_rate=None,
        median_filter=None,
    ):
        """Detect events in audio that arrives in chunks (a generator).

        The model runs on whole windows of its clip length every ``hop``
        seconds; each event is yielded once final. See
        :mod:`speechbrain_sed_condmix.streaming` for the latency and the
        trade-offs of ``hop`` and ``look_ahead``. A causal model
        (``causal: True``) streams with its carried state instead, frame
        by frame, without windows (``hop`` and ``look_ahead`` do not
        apply): see :mod:`speechbrain_sed_condmix.causal_streaming`.

        Arguments
        ---------
        chunks : iterable
            Audio chunks of any size (``[samples]`` or ``[samples,
            channels]``) at the model's sample rate.
        hop : float
            Seconds between the model's windows.
        look_ahead : float, optional
            Seconds of audio a frame keeps after it in its window
            (default: ``(window - hop) / 2``, centred windows).
        sample_rate : int, optional
            Rate of the chunks (must be the model's).
        median_filter : int, optional
            Causal models only: median filter frames for every class
            instead of the model's (fewer answer sooner).

        Yields
        ------
        speechbrain_sed_condmix.streaming.StreamEvent
            ``(onset, offset, event_label, score, emitted_at)``, seconds
            from the start of the stream.
        """
        from speechbrain_sed_condmix.streaming import stream_events

        if self.causal:
            from speechbrain_sed_condmix.causal_streaming import (
                CausalEventStream,
            )

            if look_ahead is not None:
                raise ValueError(
                    "look_ahead does not apply to a causal model: its "
                    "frames need no window (the look-ahead is the front "
                    "end's, see causal_streaming)"
                )
            stream = CausalEventStream(self, sample_rate, median_filter)
            for chunk in chunks:
                yield from stream.push(chunk)
            yield from stream.finish()
            return
        if median_filter is not None:
            raise ValueError(
                "median_filter applies to the streams of causal models; "
                "set this model's post-processing instead"
            )

        yield from stream_events(
            self,
            chunks,
            hop=hop,
            look_ahead=look_ahead,
            sample_rate=sample_rate,
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

    def raw_frame_scores(self, waveforms, look_ahead=None):
        """Stitched network scores (no post-processing) of waveforms.

        Windows are cut on the fly, ``batch_size`` at a time, so long
        files need little memory beyond their waveform.

        Arguments
        ---------
        waveforms : list of torch.Tensor
            Mono waveforms at the model's sample rate.
        look_ahead : float, optional
            Hand the frames over between windows by right context
            (seconds) instead of by centres, as a stream with this
            ``look_ahead`` does (:func:`~speechbrain_sed_condmix.windowing.
            handover_sample`).

        Returns
        -------
        list of pandas.DataFrame
            sed_scores_eval DataFrames, one per waveform, spanning its
            length (up to the last frame boundary before it).
        """
        if self.causal:
            from speechbrain_sed_condmix.causal_streaming import (
                causal_frame_scores,
            )

            return [
                _scores_frame(
                    *causal_frame_scores(self, wav),
                    self.classes,
                    self.sample_rate,
                )
                for wav in waveforms
            ]
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
        ahead = None
        if look_ahead is not None:
            ahead = float(look_ahead) * self.sample_rate
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
                per_window,
                starts,
                self.frame_samples,
                n_samples,
                look_ahead=ahead,
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
