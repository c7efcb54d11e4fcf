"""Tests of DESED preparation on generated mini-DESED data."""

import csv
import json
import logging
import shutil

import pandas as pd
import pytest
import soundfile as sf

from speechbrain_sed_condmix.dataio import desed, prep
from speechbrain_sed_condmix.dataio.desed import (
    DesedDataError,
    load_manifest,
    merge_same_class_events,
    prepare_desed,
)
from speechbrain_sed_condmix.dataio.layout import DESED_CLASSES, subset_layout


def read_tsv(path):
    return pd.read_csv(path, sep="\t")


def test_outputs_match_metadata(mini_desed_tiny, prepared_tiny):
    save, outputs = prepared_tiny
    assert set(outputs) == {
        "synth_train",
        "strong_train",
        "weak_train",
        "weak_val",
        "unlabeled",
        "synth_val",
        "validation",
    }
    for name in ("synth_train", "strong_train", "synth_val", "validation"):
        meta = read_tsv(mini_desed_tiny / subset_layout(name).metadata)
        manifest = load_manifest(outputs[name])
        assert set(manifest) == {f[:-4] for f in meta.filename}
        events = meta.dropna(subset=["event_label"])
        assert sum(len(e["events"]) for e in manifest.values()) <= len(events)
        for clip_id, entry in manifest.items():
            rows = events[events.filename == clip_id + ".wav"]
            assert sorted(entry["labels"]) == sorted(set(rows.event_label))
            info = sf.info(entry["wav"])
            assert info.samplerate == 16000 and info.channels == 1
            assert abs(info.duration - entry["duration"]) < 1e-3
            source = mini_desed_tiny / subset_layout(name).audio
            src = sf.info(str(source / f"{clip_id}.wav"))
            assert src.samplerate == 44100
            assert abs(src.duration - entry["duration"]) < 1e-3
    unlabeled = load_manifest(outputs["unlabeled"])
    folder = mini_desed_tiny / subset_layout("unlabeled").audio
    assert len(unlabeled) == len(list(folder.glob("*.wav")))
    assert all(e["kind"] == "unlabeled" for e in unlabeled.values())


def test_weak_split_follows_reference(mini_desed_tiny, prepared_tiny):
    _, outputs = prepared_tiny
    weak = read_tsv(mini_desed_tiny / "metadata/train/weak.tsv")
    expected = set(weak.sample(frac=0.9, random_state=42).filename)
    train = load_manifest(outputs["weak_train"])
    val = load_manifest(outputs["weak_val"])
    assert {k + ".wav" for k in train} == expected
    assert set(train).isdisjoint(val)
    assert len(train) + len(val) == len(weak)
    for entry in val.values():
        assert entry["labels"] and set(entry["labels"]) <= set(DESED_CLASSES)


def test_eval_tsvs(mini_desed_tiny, prepared_tiny):
    save, _ = prepared_tiny
    for name in ("synth_val", "validation"):
        gt = read_tsv(save / f"{name}_gt.tsv")
        durations = read_tsv(save / f"{name}_durations.tsv")
        assert list(gt.columns) == [
            "filename",
            "onset",
            "offset",
            "event_label",
        ]
        assert list(durations.columns) == ["filename", "duration"]
        assert set(gt.filename) == set(durations.filename)
        for row in durations.itertuples():
            source = mini_desed_tiny / subset_layout(name).audio / row.filename
            assert row.duration == pytest.approx(sf.info(str(source)).duration)
    gt = read_tsv(save / "validation_gt.tsv")
    # the generator puts clips without events in validation; they are kept
    assert gt.event_label.isna().any()


def test_second_run_is_a_no_op(mini_desed_tiny, prepared_tiny, monkeypatch):
    save, outputs = prepared_tiny
    stamps = {p: p.stat().st_mtime_ns for p in outputs.values()}

    def fail(*args, **kwargs):
        raise AssertionError("the data was read again")

    monkeypatch.setattr(desed, "_read_subsets", fail)
    again = prepare_desed(mini_desed_tiny, save, progress=False)
    assert again == outputs
    assert {p: p.stat().st_mtime_ns for p in again.values()} == stamps
    # other options invalidate the marker
    with pytest.raises(AssertionError, match="read again"):
        prepare_desed(mini_desed_tiny, save, skip_bad=True, progress=False)


def copy_subsets(src, dst, names):
    for name in names:
        layout = subset_layout(name)
        shutil.copytree(src / layout.audio, dst / layout.audio)
        if layout.metadata:
            (dst / layout.metadata).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src / layout.metadata, dst / layout.metadata)
    return dst


def append_rows(path, rows):
    with open(path, "a", newline="") as handle:
        csv.writer(handle, delimiter="\t").writerows(rows)
    with open(path) as handle:
        return sum(1 for _ in handle)  # line number of the last row


def make_broken_copy(mini_desed_tiny, tmp_path):
    data = copy_subsets(
        mini_desed_tiny, tmp_path / "data", ["weak", "validation"]
    )
    weak_tsv = data / subset_layout("weak").metadata
    val_tsv = data / subset_layout("validation").metadata
    weak = read_tsv(weak_tsv)
    val = read_tsv(val_tsv).dropna()
    # 1. a corrupt audio file
    corrupt = data / subset_layout("weak").audio / weak.filename[0]
    corrupt.write_bytes(b"RIFF not really a wave file")
    # 2. a float WAV with NaN and Inf samples (the 16-bit cache would
    # turn them into full-scale samples)
    non_finite = data / subset_layout("weak").audio / weak.filename[1]
    audio, rate = sf.read(non_finite, dtype="float32")
    audio[rate : rate + 5] = float("nan")
    audio[2 * rate] = float("inf")
    sf.write(non_finite, audio, rate, subtype="FLOAT")
    # 3. an unknown label, 4. onset >= offset, 5. a duplicate row
    clip = val.filename.iloc[0]
    line_unknown = append_rows(val_tsv, [[clip, 1.0, 2.0, "Horse"]])
    line_order = append_rows(val_tsv, [[clip, 3.0, 2.5, "Dog"]])
    first = val.iloc[0]
    line_dup = append_rows(
        val_tsv,
        [[first.filename, first.onset, first.offset, first.event_label]],
    )
    return data, {
        "corrupt": str(corrupt),
        "non_finite": str(non_finite),
        "unknown": f"{val_tsv}:{line_unknown}",
        "order": f"{val_tsv}:{line_order}",
        "dup": f"{val_tsv}:{line_dup}",
    }


def test_one_error_lists_every_problem(mini_desed_tiny, tmp_path):
    data, where = make_broken_copy(mini_desed_tiny, tmp_path)
    with pytest.raises(DesedDataError) as info:
        prepare_desed(
            data,
            tmp_path / "prep",
            subsets=["weak", "validation"],
            progress=False,
        )
    problems = info.value.problems
    assert len(problems) == 5
    text = str(info.value)
    assert f"{where['corrupt']}: unreadable audio" in text
    assert (
        f"{where['non_finite']}: 5 NaN and 1 Inf sample(s) (first at 1.00 s)"
    ) in text
    assert f"{where['unknown']}: unknown label 'Horse'" in text
    assert f"{where['order']}: onset 3.0 >= offset 2.5" in text
    assert f"{where['dup']}: duplicate of line" in text
    # nothing was written: the data is untouched and there is no marker
    assert not (tmp_path / "prep" / desed.MARKER_NAME).exists()


def test_skip_bad_drops_and_lists(mini_desed_tiny, tmp_path, caplog):
    data, where = make_broken_copy(mini_desed_tiny, tmp_path)
    with caplog.at_level(logging.WARNING):
        outputs = prepare_desed(
            data,
            tmp_path / "prep",
            subsets=["weak", "validation"],
            skip_bad=True,
            progress=False,
        )
    assert "dropping 5 bad row(s) or file(s)" in caplog.text
    assert where["unknown"] in caplog.text
    assert f"{where['non_finite']}: 5 NaN and 1 Inf" in caplog.text
    weak = {
        **load_manifest(outputs["weak_train"]),
        **load_manifest(outputs["weak_val"]),
    }
    for bad in ("corrupt", "non_finite"):
        assert where[bad].rsplit("/", 1)[-1][:-4] not in weak
    gt = read_tsv(tmp_path / "prep" / "validation_gt.tsv")
    assert "Horse" not in set(gt.event_label.dropna())
    assert not ((gt.onset == 3.0) & (gt.offset == 2.5)).any()


def test_more_problem_kinds(mini_desed_tiny, tmp_path):
    data = copy_subsets(
        mini_desed_tiny, tmp_path / "data", ["weak", "validation"]
    )
    weak_tsv = data / subset_layout("weak").metadata
    val_tsv = data / subset_layout("validation").metadata
    val = read_tsv(val_tsv).dropna()
    clip = val.filename.iloc[0]
    duration = sf.info(
        str(data / subset_layout("validation").audio / clip)
    ).duration
    lines = {
        "empty": append_rows(weak_tsv, [[read_tsv(weak_tsv).filename[1], ""]]),
        "missing": append_rows(weak_tsv, [["Ymissing.wav", "Dog"]]),
        "negative": append_rows(val_tsv, [[clip, -1.0, 2.0, "Dog"]]),
        "past_end": append_rows(val_tsv, [[clip, 1.0, duration + 1, "Cat"]]),
        "nan": append_rows(val_tsv, [[clip, "abc", 2.0, "Cat"]]),
    }
    empty_wav = data / subset_layout("validation").audio / "Yempty.wav"
    sf.write(str(empty_wav), [], 44100)
    append_rows(val_tsv, [["Yempty.wav", 0.5, 1.0, "Dog"]])
    with pytest.raises(DesedDataError) as info:
        prepare_desed(
            data,
            tmp_path / "prep",
            subsets=["weak", "validation", "unlabeled"],
            progress=False,
        )
    text = str(info.value)
    assert f"{weak_tsv}:{lines['empty']}: empty weak labels" in text
    assert f"{weak_tsv}:{lines['empty']}: duplicate of line" in text
    assert f"{weak_tsv}:{lines['missing']}: audio file not found" in text
    assert f"{val_tsv}:{lines['negative']}: negative time" in text
    assert f"{val_tsv}:{lines['past_end']}: event ends at" in text
    assert f"{val_tsv}:{lines['nan']}: onset/offset not numbers" in text
    assert f"{empty_wav}: empty audio" in text
    assert "unlabel_in_domain: audio folder not found" in text


def test_merges_same_class_overlaps(mini_desed_tiny, tmp_path, caplog):
    data = copy_subsets(mini_desed_tiny, tmp_path / "data", ["validation"])
    val_tsv = data / subset_layout("validation").metadata
    clip = read_tsv(val_tsv).dropna().filename.iloc[0]
    # 0.2-0.6 overlaps 0.5-0.9, and 0.9-1.0 touches it: 2 merges
    append_rows(
        val_tsv,
        [
            [clip, 0.2, 0.6, "Frying"],
            [clip, 0.5, 0.9, "Frying"],
            [clip, 0.9, 1.0, "Frying"],
        ],
    )
    with caplog.at_level(logging.INFO):
        outputs = prepare_desed(
            data, tmp_path / "prep", subsets=["validation"], progress=False
        )
    assert "Merged 2 overlapping or touching" in caplog.text
    entry = load_manifest(outputs["validation"])[clip[:-4]]
    frying = [e for e in entry["events"] if e[2] == "Frying"]
    assert [0.2, 1.0, "Frying"] in frying


def test_merge_function():
    events = [(3, 4, "a"), (0, 1, "a"), (0.5, 2, "a"), (2, 2.5, "a")]
    assert merge_same_class_events(events) == ([(0, 2.5, "a"), (3, 4, "a")], 2)


def test_interrupted_run_leaves_no_trusted_partial(
    mini_desed_tiny, tmp_path, monkeypatch
):
    data = copy_subsets(mini_desed_tiny, tmp_path / "data", ["synth_val"])
    real_write = sf.write
    calls = {"n": 0}

    def flaky_write(path, audio, sr, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            # a partial file appears, then the run dies
            with open(path, "wb") as handle:
                handle.write(b"RIFF partial")
            raise KeyboardInterrupt
        return real_write(path, audio, sr, **kwargs)

    monkeypatch.setattr(prep.sf, "write", flaky_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_desed(
            data, tmp_path / "prep", subsets=["synth_val"], progress=False
        )
    cache = tmp_path / "prep" / "audio_16k" / "synth_val"
    assert len(list(cache.glob("*.wav"))) == 2
    assert not list(cache.glob(".part-*"))
    monkeypatch.setattr(prep.sf, "write", real_write)
    outputs = prepare_desed(
        data, tmp_path / "prep", subsets=["synth_val"], progress=False
    )
    for entry in load_manifest(outputs["synth_val"]).values():
        assert sf.info(entry["wav"]).samplerate == 16000
    marker = json.loads((tmp_path / "prep" / desed.MARKER_NAME).read_text())
    assert marker["options"]["subsets"] == ["synth_val"]


def test_in_process_resampling_keeps_the_thread_count(
    mini_desed_tiny, tmp_path
):
    # Training after preparation in the same process must keep its threads.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        prepare_desed(
            mini_desed_tiny,
            tmp_path / "prep",
            subsets=["synth_val"],
            num_workers=1,
            progress=False,
        )
        assert (tmp_path / "prep" / "synth_val.json").is_file()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
