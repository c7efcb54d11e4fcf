"""Unlabeled audio from any folder, for self-supervised pretraining.

:func:`find_audio_files` lists the ``.wav`` and ``.flac`` files under a
folder (recursively: DESED's ``audio/train/unlabel_in_domain``, a whole
mini-DESED, or your own recordings); :func:`make_unlabeled_dataset` reads
them with soundfile, downmixes and resamples them
(:func:`~speechbrain_sed_condmix.dataio.resample.mono_at_rate`) and cuts
one random crop of fixed length per clip and epoch (zero-padded when the
clip is shorter).

Authors
 * speechbrain-sed-condmix contributors 2026
"""

from pathlib import Path

#: File suffixes read as audio (lower case).
AUDIO_SUFFIXES = (".wav", ".flac")


def find_audio_files(folder):
    """Sorted paths of the audio files under ``folder`` (recursive).

    Hidden files and folders (names starting with ``.``, e.g. the
    temporary files of an unfinished write) are skipped.

    Arguments
    ---------
    folder : str or Path
        Root folder.

    Returns
    -------
    list of Path
        The ``.wav`` and ``.flac`` files, sorted.

    Raises
    ------
    FileNotFoundError
        If ``folder`` is not a folder or holds no audio file.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> (root / "a").mkdir()
    >>> for name in ("a/x.wav", "y.FLAC", "notes.txt", ".part.wav"):
    ...     (root / name).touch()
    >>> [p.relative_to(root).as_posix() for p in find_audio_files(root)]
    ['a/x.wav', 'y.FLAC']
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(
            f"--data_folder={folder}: not a folder (pass a folder of "
            "unlabeled .wav or .flac files, searched recursively)"
        )
    files = sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in AUDIO_SUFFIXES
        and path.is_file()
        and not any(
            part.startswith(".") for part in path.relative_to(root).parts
        )
    )
    if not files:
        raise FileNotFoundError(
            f"--data_folder={folder}: no .wav or .flac file found under it "
            "(searched recursively)"
        )
    return files


def make_unlabeled_dataset(files, sample_rate=16000, crop_seconds=10.0):
    """A ``DynamicItemDataset`` of random fixed-length crops.

    Each item has ``id`` (the path relative to the common folder) and
    ``sig``: a mono float32 crop of ``crop_seconds`` at ``sample_rate``, a
    new random window of the clip each time it is read (zero-padded at the
    end when the clip is shorter).

    Arguments
    ---------
    files : list of Path
        Audio files (e.g. from :func:`find_audio_files`).
    sample_rate : int
        Output rate in Hz.
    crop_seconds : float
        Crop length in seconds.

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
        The dataset, with output keys ``id`` and ``sig``.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> path = getfixture("tmp_path") / "a.wav"
    >>> sf.write(path, np.zeros(8000, dtype="float32"), 8000)
    >>> data = make_unlabeled_dataset([path], 16000, crop_seconds=2.0)
    >>> data[0]["sig"].shape
    torch.Size([32000])
    """
    import os

    import soundfile as sf
    import speechbrain as sb
    from speechbrain.dataio.dataset import DynamicItemDataset

    from speechbrain_sed_condmix.dataio.pipelines import fit_to_length
    from speechbrain_sed_condmix.dataio.resample import mono_at_rate

    files = [Path(f) for f in files]
    common = Path(os.path.commonpath([str(f.parent) for f in files]))
    data = {f.relative_to(common).as_posix(): {"path": str(f)} for f in files}
    dataset = DynamicItemDataset(data)
    length = int(round(crop_seconds * sample_rate))

    @sb.utils.data_pipeline.takes("path")
    @sb.utils.data_pipeline.provides("sig")
    def read(path):
        """Read, downmix, resample and crop one file."""
        try:
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as err:
            raise RuntimeError(
                f"{path}: cannot read the audio: {err}"
            ) from None
        wav = mono_at_rate(audio, rate, sample_rate)
        return fit_to_length(wav, length, random_crop=True)[0]

    dataset.add_dynamic_item(read)
    dataset.set_output_keys(["id", "sig"])
    return dataset
