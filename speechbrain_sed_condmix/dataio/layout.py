"""The DESED folder layout and class list, shared by prep and generator.

The paths are those of the DCASE Task 4 recipes (relative to the dataset
root). mini-DESED writes exactly this layout, so the preparation code runs the
same path on generated audio and on the real dataset.
"""

from dataclasses import dataclass

#: The 10 DESED classes, in encoder order (alphabetical).
DESED_CLASSES = (
    "Alarm_bell_ringing",
    "Blender",
    "Cat",
    "Dishes",
    "Dog",
    "Electric_shaver_toothbrush",
    "Frying",
    "Running_water",
    "Speech",
    "Vacuum_cleaner",
)


@dataclass(frozen=True)
class SubsetLayout:
    """Where one DESED subset lives, relative to the dataset root.

    Arguments
    ---------
    name : str
        Subset name used for manifests and caches.
    audio : str
        Folder holding the 44.1 kHz ``.wav`` clips.
    metadata : str or None
        Annotation TSV (``None`` for unlabeled audio).
    kind : str
        ``"strong"``, ``"weak"`` or ``"unlabeled"``.
    durations : str or None
        Durations TSV for evaluation subsets.
    """

    name: str
    audio: str
    metadata: str | None
    kind: str
    durations: str | None = None


#: The subsets of DESED as laid out by the official download scripts.
DESED_LAYOUT = (
    SubsetLayout(
        "synth_train",
        "dcase_synth/audio/train/synthetic21_train/soundscapes",
        "dcase_synth/metadata/train/synthetic21_train/soundscapes.tsv",
        "strong",
    ),
    SubsetLayout(
        "strong_train",
        "audio/train/strong_label_real",
        "metadata/train/audioset_strong.tsv",
        "strong",
    ),
    SubsetLayout(
        "weak",
        "audio/train/weak",
        "metadata/train/weak.tsv",
        "weak",
    ),
    SubsetLayout(
        "unlabeled",
        "audio/train/unlabel_in_domain",
        None,
        "unlabeled",
    ),
    SubsetLayout(
        "synth_val",
        "dcase_synth/audio/validation/synthetic21_validation/soundscapes",
        "dcase_synth/metadata/validation/synthetic21_validation/soundscapes.tsv",
        "strong",
        "dcase_synth/metadata/validation/synthetic21_validation/durations.tsv",
    ),
    SubsetLayout(
        "validation",
        "audio/validation/validation",
        "metadata/validation/validation.tsv",
        "strong",
        "metadata/validation/validation_durations.tsv",
    ),
)


def subset_layout(name):
    """Return the :class:`SubsetLayout` called ``name``.

    Example
    -------
    >>> subset_layout("weak").metadata
    'metadata/train/weak.tsv'
    """
    for layout in DESED_LAYOUT:
        if layout.name == name:
            return layout
    known = ", ".join(lay.name for lay in DESED_LAYOUT)
    raise KeyError(f"Unknown DESED subset {name!r}; known: {known}")
