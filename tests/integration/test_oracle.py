"""Oracle check of the whole evaluation path on prepared mini-DESED.

The ground truth of the validation manifest, encoded on the 64 ms label grid
and written as frame scores, must score (almost) perfectly: this ties the
generator, the preparation, the encoder, the score format and the metrics
together. Perfect scores are not expected exactly: the grid rounds onsets down
and offsets up by up to one frame.
"""

import numpy as np

from speechbrain_sed_condmix.dataio.desed import load_manifest
from speechbrain_sed_condmix.dataio.encoder import FrameLabelEncoder
from speechbrain_sed_condmix.dataio.layout import DESED_CLASSES
from speechbrain_sed_condmix.metrics import compute_sed_metrics
from speechbrain_sed_condmix.scores import ground_truth_scores


def test_oracle_scores_nearly_perfect(prepared_tiny):
    save, outputs = prepared_tiny
    encoder = FrameLabelEncoder(DESED_CLASSES)
    for name in ("validation", "synth_val"):
        manifest = load_manifest(outputs[name])
        metrics = compute_sed_metrics(
            ground_truth_scores(manifest, encoder),
            save / f"{name}_gt.tsv",
            save / f"{name}_durations.tsv",
        )
        assert metrics["psds1"] >= 0.95, metrics["psds1"]
        assert metrics["psds2"] >= 0.95, metrics["psds2"]
        assert metrics["intersection_f1"] >= 0.95
        # onsets floor and offsets ceil by < 64 ms, inside the 200 ms collar
        assert metrics["collar_f1"] >= 0.95


def test_shuffled_oracle_scores_badly(prepared_tiny):
    # the same check on scores given to the wrong clips must fail
    save, outputs = prepared_tiny
    encoder = FrameLabelEncoder(DESED_CLASSES)
    manifest = load_manifest(outputs["validation"])
    scores = ground_truth_scores(manifest, encoder)
    ids = sorted(scores)
    rng = np.random.default_rng(0)
    shuffled = dict(zip(ids, [scores[i] for i in rng.permutation(ids)]))
    metrics = compute_sed_metrics(
        shuffled,
        save / "validation_gt.tsv",
        save / "validation_durations.tsv",
    )
    assert metrics["psds1"] < 0.5
