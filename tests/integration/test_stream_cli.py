"""End to end: raw PCM piped into ``sed-detect --stream`` (a subprocess)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from speechbrain_sed_condmix.export import export_detector
from speechbrain_sed_condmix.importing import DESED_CLASSES
from speechbrain_sed_condmix.postprocessing import PostProcessing

# sed-detect subprocesses: slow.
pytestmark = pytest.mark.slow

SMALL_CRNN = {"cnn_filters": [4, 8, 8, 8, 8, 8, 8], "rnn_hidden": 8}


@pytest.fixture(scope="module")
def dog_folder(tmp_path_factory, make_experiment):
    """A small untrained CRNN whose Dog threshold every frame passes."""
    root = tmp_path_factory.mktemp("stream_cli")
    experiment, _ = make_experiment(root / "exp", "crnn_mt.yaml", SMALL_CRNN)
    threshold = dict.fromkeys(DESED_CLASSES, 2.0)
    threshold["Dog"] = -1.0
    post = PostProcessing(DESED_CLASSES, median_filter=7, threshold=threshold)
    return export_detector(experiment, root / "model", postprocessing=post)


def _signal(seconds, seed):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)


def test_pcm_piped_into_sed_detect_stream(dog_folder, tmp_path):
    """End to end: 16-bit PCM on stdin, events on stdout."""
    command = Path(sys.executable).parent / "sed-detect"
    pcm = (np.clip(_signal(12.0, seed=5), -1, 0.999) * 32768).astype("<i2")
    result = subprocess.run(
        [
            str(command),
            "--stream",
            "--model",
            str(dog_folder),
            "--hop",
            "2",
            "--out",
            str(tmp_path / "events.tsv"),
        ],
        input=pcm.tobytes(),
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().strip().splitlines()
    assert lines[0] == "onset\toffset\tevent_label\tscore\temitted_at"
    assert lines[1:] and lines[1].startswith("0.000\t11.984\tDog\t")
    assert lines[1].endswith("\t12.000")
    assert (tmp_path / "events.tsv").read_text().count("Dog") == 1
