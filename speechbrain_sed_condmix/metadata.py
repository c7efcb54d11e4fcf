"""What a checkpoint was trained on: classes, label grid and front end.

A checkpoint's weights only mean something with the class list (the order
of the outputs), the label grid and the front end they were trained with.
:class:`ModelMetadata` records them next to the weights (a recoverable of
the recipe's ``Checkpointer``, ``model_meta.ckpt``) and, when a checkpoint
is loaded (resume, a stage-1 checkpoint, ``export_detector``), compares the
stored record with the current YAML and stops with a message that names
both sides of every difference.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import json
from pathlib import Path

from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

#: File name of the record inside a checkpoint folder.
METADATA_FILE = "model_meta.ckpt"

#: Version of the feature normalisation code (log/dB, clamping, scaling in
#: ``lobes/features.py``). Bump it when that code changes the features a
#: model sees, so that older checkpoints are refused rather than misused.
NORMALIZATION_VERSION = 1

#: Module attributes of the front end that are recorded (plain values).
_PLAIN = (bool, int, float, str, type(None))


class ModelMetadataError(ValueError):
    """A checkpoint does not match the YAML it is loaded with."""


def frontend_params(frontend):
    """The plain parameters of a front end and of its sub-modules.

    Arguments
    ---------
    frontend : torch.nn.Module
        The front end (e.g. ``CNNMelFrontEnd``; torchaudio transforms
        included).

    Returns
    -------
    dict
        ``{"<module path>.<attribute>": value}`` and the class of each
        module under ``"<module path>.class"``.

    Example
    -------
    >>> from speechbrain_sed_condmix.lobes.features import CNNMelFrontEnd
    >>> params = frontend_params(CNNMelFrontEnd(n_mels=64))
    >>> params["class"], params["melspec.n_mels"], params["hop_length"]
    ('CNNMelFrontEnd', 64, 256)
    """
    params = {}
    for path, module in frontend.named_modules():
        prefix = f"{path}." if path else ""
        params[f"{prefix}class"] = type(module).__name__
        for key, value in vars(module).items():
            if key.startswith("_") or key == "training":
                continue
            if isinstance(value, tuple) and all(
                isinstance(v, _PLAIN) for v in value
            ):
                value = list(value)
            if isinstance(value, _PLAIN) or isinstance(value, list):
                params[prefix + key] = value
    return params


@register_checkpoint_hooks
class ModelMetadata:
    """Classes, label grid and front end of a model, saved with its weights.

    Arguments
    ---------
    classes : sequence of str
        The classes in output order.
    frontend : torch.nn.Module, optional
        The front end; its parameters are recorded.
    encoder : FrameLabelEncoder, optional
        The label grid (clip length, sample rate, hop, pooling).

    Example
    -------
    >>> from speechbrain_sed_condmix.lobes.features import CNNMelFrontEnd
    >>> meta = ModelMetadata(["bark", "chime"], CNNMelFrontEnd())
    >>> path = getfixture("tmp_path") / "model_meta.ckpt"
    >>> meta.save(path)
    >>> ModelMetadata(["bark", "chime"], CNNMelFrontEnd()).load(path)
    >>> ModelMetadata(["chime", "bark"], CNNMelFrontEnd()).load(path)
    Traceback (most recent call last):
    ...
    speechbrain_sed_condmix.metadata.ModelMetadataError: ...
    """

    def __init__(self, classes, frontend=None, encoder=None):
        self.record = {
            "classes": [str(c) for c in classes],
            "normalization_version": NORMALIZATION_VERSION,
        }
        if frontend is not None:
            self.record["frontend"] = frontend_params(frontend)
        if encoder is not None:
            self.record["label_grid"] = {
                "audio_duration": float(encoder.audio_duration),
                "sample_rate": int(encoder.sample_rate),
                "hop_length": int(encoder.hop_length),
                "pooling": int(encoder.pooling),
            }

    @classmethod
    def from_hparams(cls, hparams):
        """Build it from recipe hparams (``encoder``, ``frontend``)."""
        encoder = hparams["encoder"]
        return cls(encoder.classes, hparams.get("frontend"), encoder)

    @mark_as_saver
    def save(self, path):
        """Write the record as JSON."""
        Path(path).write_text(json.dumps(self.record, indent=1))

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        """Compare the stored record with this one; raise on a difference."""
        self.check(json.loads(Path(path).read_text()), source=path)

    def check(self, stored, source="the checkpoint"):
        """Raise :class:`ModelMetadataError` if ``stored`` differs.

        Only the parts present on both sides are compared, so a record
        without a front end (e.g. from a unit test) still checks classes.

        Arguments
        ---------
        stored : dict
            A record read from a checkpoint.
        source : str or Path
            Where it was read, for the message.
        """
        problems = []
        for key in ("classes", "normalization_version", "label_grid"):
            if key in stored and key in self.record:
                if stored[key] != self.record[key]:
                    problems.append(
                        f"{key}: checkpoint {stored[key]}, "
                        f"YAML {self.record[key]}"
                    )
        if "frontend" in stored and "frontend" in self.record:
            ours, theirs = self.record["frontend"], stored["frontend"]
            for key in sorted(set(ours) | set(theirs)):
                if ours.get(key) != theirs.get(key):
                    problems.append(
                        f"frontend {key}: checkpoint {theirs.get(key)!r}, "
                        f"YAML {ours.get(key)!r}"
                    )
        if problems:
            raise ModelMetadataError(
                f"{source} was trained with other classes or another "
                "front end than this YAML:\n  "
                + "\n  ".join(problems)
                + "\nUse the YAML (classes, front end) the checkpoint was "
                "trained with, or start a new experiment folder."
            )

    def check_folder(self, folder):
        """Check ``folder/model_meta.ckpt`` if it exists (older: skipped)."""
        path = Path(folder) / METADATA_FILE
        if path.is_file():
            self.load(path)


def write_class_list(classes, path):
    """Write the class list, one per line (the experiment's classes.txt).

    Example
    -------
    >>> p = getfixture("tmp_path") / "classes.txt"
    >>> write_class_list(["bark", "chime"], p)
    >>> p.read_text()
    'bark\\nchime\\n'
    """
    Path(path).write_text("".join(f"{c}\n" for c in classes))


def check_model_fits(frontend, model, encoder):
    """Run one silent clip through the model; check it fits the label grid.

    Called before training so that a clip length the model cannot take
    (ATST-Frame: at most 250 tokens, 10 s) or a class count or frame count
    that differs from the labels stops the run at once with a clear message.

    Arguments
    ---------
    frontend : torch.nn.Module
        The front end (``frontend(wav)`` gives the model's input(s)).
    model : torch.nn.Module
        The network (returns an ``SEDOutput`` with ``strong`` of shape
        ``[batch, classes, frames]``).
    encoder : FrameLabelEncoder
        The label grid.

    Example
    -------
    >>> from speechbrain_sed_condmix.dataio.encoder import FrameLabelEncoder
    >>> from speechbrain_sed_condmix.lobes.crnn import CRNN
    >>> from speechbrain_sed_condmix.lobes.features import CNNMelFrontEnd
    >>> crnn = CRNN(n_class=2, n_filters=[4, 4, 4, 4, 4, 4, 4], rnn_hidden=4)
    >>> enc = FrameLabelEncoder(["a", "b"], audio_duration=5.0)
    >>> check_model_fits(CNNMelFrontEnd(), crnn, enc)
    >>> enc = FrameLabelEncoder(["a", "b", "c"], audio_duration=5.0)
    >>> check_model_fits(CNNMelFrontEnd(), crnn, enc)
    Traceback (most recent call last):
    ...
    speechbrain_sed_condmix.metadata.ModelMetadataError: ...
    """
    import torch

    n = int(round(encoder.audio_duration * encoder.sample_rate))
    modules = [m for m in (frontend, model) if isinstance(m, torch.nn.Module)]
    modes = [m.training for m in modules]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        for module in modules:
            module.eval()
        with torch.no_grad():
            inputs = frontend(torch.zeros(1, n, device=device))
            inputs = inputs if isinstance(inputs, list) else [inputs]
            try:
                out = model(*inputs)
            except ValueError as err:
                raise ModelMetadataError(
                    f"audio_duration {encoder.audio_duration} s does not fit "
                    f"this model: {err}"
                ) from err
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)
    classes, frames = out.strong.shape[1], out.strong.shape[-1]
    if (classes, frames) != (encoder.n_classes, encoder.n_frames):
        raise ModelMetadataError(
            f"the model gives {classes} classes x {frames} frames for "
            f"{encoder.audio_duration} s, the labels have "
            f"{encoder.n_classes} classes x {encoder.n_frames} frames "
            "(check n_classes against classes, and the encoder's "
            "hop_length and pooling against the front end and the model)"
        )
