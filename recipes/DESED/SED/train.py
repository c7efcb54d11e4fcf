#!/usr/bin/env python3
"""Train and evaluate a semi-supervised SED system on DESED or your data.

    python train.py hparams/crnn_mt.yaml --data_folder=/path/to/DESED
    python train.py hparams/atst_sed_stage1.yaml --data_folder=... \
        --atst_ckpt=/path/to/atst_as2M.ckpt
    python train.py hparams/atst_sed_stage2.yaml --data_folder=... \
        --stage1_ckpt=results/atst_sed_stage1/42

The same command runs on generated mini-DESED (``sed-mini-desed``), which
shares DESED's layout. Your own data (the generic TSV format, any classes):
``python recipes/Custom/SED/train.py recipes/Custom/SED/hparams/custom_crnn.yaml
--data_folder=...`` (that ``train.py`` links to this one), whose ``prepare``
key names ``prepare_sed_dataset``. Multi-GPU:
``torchrun --nproc_per_node=N train.py ...``.

Two flags of this script, not of SpeechBrain: ``--overrides_file=F`` adds
the overrides of a YAML mapping (e.g. the ``best_overrides.yaml`` of
``sed-tune``; a flag given on the command line wins), and ``--train_only``
trains and selects a checkpoint but skips the test stage (what a
``sed-tune`` trial runs: a search never looks at the reporting split).

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import sys
from pathlib import Path

import yaml

# Before torch allocates anything: huge pages for large CPU tensors and a
# heap that keeps freed memory (faster CPU steps, the same numbers).
from speechbrain_sed_condmix.allocator import configure_cpu_allocator

configure_cpu_allocator()

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main
from speechbrain.utils.run_opts import RunOptions
from torch.utils.data import ConcatDataset

from speechbrain_sed_condmix.brain import SEDBrain
from speechbrain_sed_condmix.dataio.desed import prepare_desed
from speechbrain_sed_condmix.dataio.pipelines import make_sed_dataset
from speechbrain_sed_condmix.dataio.sampler import MultiSourceBatchSampler
from speechbrain_sed_condmix.metadata import (
    ModelMetadata,
    check_model_fits,
    write_class_list,
)
from speechbrain_sed_condmix.postprocessing import PostProcessing
from speechbrain_sed_condmix.pretrained import load_pretrained


def layout_subsets(hparams):
    """DESED subsets to prepare for the manifests that the YAML names."""
    names = [
        *hparams["train_subsets"],
        *hparams["valid_subsets"],
        hparams["test_subset"],
    ]
    subsets = {"weak" if n.startswith("weak_") else n for n in names}
    return sorted(subsets)


def prepare_data(hparams):
    """Prepare the data once (main process); return the manifest paths.

    A YAML with a ``prepare`` function (e.g. ``prepare_sed_dataset`` for
    the generic format) uses it; otherwise the data is DESED-shaped.
    """
    if "prepare" in hparams:
        prepare, kwargs = hparams["prepare"], {}
    else:
        prepare = prepare_desed
        kwargs = {
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["prep_folder"],
            "subsets": layout_subsets(hparams),
            "classes": hparams["encoder"].classes,
            "sample_rate": hparams["sample_rate"],
            "skip_bad": hparams["skip_bad"],
            "num_workers": hparams["prep_workers"],
        }
    run_on_main(prepare, kwargs=kwargs)
    # Every rank reads the outputs; the main process prepared them above, so
    # this call finds its marker and returns at once.
    return prepare(**kwargs, progress=False)


def brain_hparams(hparams, hparams_file):
    """The hyperparameters that SEDBrain reads, and nothing else.

    Listing them here keeps the contract between the YAML and the Brain in
    the recipe: a YAML without one of them stops here with its name, and
    the Brain cannot read a key that this list does not give it. The
    SpeechBrain run options set in the YAML (``max_grad_norm``,
    ``ckpt_interval_minutes``, ...) are passed on as Brain takes them.
    """
    run_options = {
        key: hparams[key] for key in RunOptions().as_dict() if key in hparams
    }
    try:
        return {**run_options, **_brain_keys(hparams)}
    except KeyError as missing:
        raise SystemExit(
            f"{hparams_file}: no key {missing}, which SEDBrain reads (see "
            "brain_hparams in train.py and the recipe YAMLs)"
        ) from None


def _brain_keys(hparams):
    """SEDBrain's keys, read from the YAML (a missing one: KeyError)."""
    return {
        "encoder": hparams["encoder"],
        "objective": hparams["objective"],
        "lr_schedule": hparams["lr_schedule"],
        "param_groups": hparams["param_groups"],
        "teacher_input": hparams["teacher_input"],
        "mixup": hparams["mixup"],
        "mix_subsets": hparams["mix_subsets"],
        "mix_inputs": hparams["mix_inputs"],
        "input_augment": hparams["input_augment"],
        "feature_cache": hparams["feature_cache"],
        "channels_last": hparams["channels_last"],
        "max_bad_audio": hparams["max_bad_audio"],
        "valid_every_n_epochs": hparams["valid_every_n_epochs"],
        "selection_key": hparams["selection_key"],
        "median_filter": hparams["median_filter"],
        "score_padded_tail": hparams["score_padded_tail"],
        "csebbs_tuning": hparams["csebbs_tuning"],
        "n_event_rolls": hparams["n_event_rolls"],
        "valid_ground_truth": hparams["valid_ground_truth"],
        "valid_durations": hparams["valid_durations"],
        "test_ground_truth": hparams["test_ground_truth"],
        "test_durations": hparams["test_durations"],
        "output_folder": hparams["output_folder"],
        "train_logger": hparams["train_logger"],
        "epoch_counter": hparams["epoch_counter"],
    }


def dataio_prep(hparams, manifests):
    """Build the train set with its batch sampler, and valid/test sets."""
    encoder, rate = hparams["encoder"], hparams["sample_rate"]
    train_parts = [
        make_sed_dataset(manifests[name], encoder, train=True, sample_rate=rate)
        for name in hparams["train_subsets"]
    ]
    sampler = MultiSourceBatchSampler(
        train_parts, hparams["batch_sizes"], seed=hparams["seed"]
    )
    valid = ConcatDataset(
        [
            make_sed_dataset(manifests[n], encoder, sample_rate=rate)
            for n in hparams["valid_subsets"]
        ]
    )
    test = make_sed_dataset(
        manifests[hparams["test_subset"]], encoder, sample_rate=rate
    )
    return ConcatDataset(train_parts), sampler, valid, test


def recipe_arguments(argv):
    """``(argv, train_only)``: ``--overrides_file`` expanded into flags.

    The file's mapping becomes ``--key=value`` flags placed before the
    command line's, and a key also given on the command line is left to it.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
    ...     _ = f.write("{mixup_tau: 0.6, batch_sizes: [2, 2, 4], lr: 0.1}")
    ...     f.flush()
    ...     recipe_arguments(["h.yaml", f"--overrides_file={f.name}",
    ...                       "--lr=0.5", "--train_only"])
    (['h.yaml', '--mixup_tau=0.6', '--batch_sizes=[2, 2, 4]', '--lr=0.5'], True)
    """
    train_only = "--train_only" in argv
    argv = [arg for arg in argv if arg != "--train_only"]
    files = [a for a in argv if a.startswith("--overrides_file=")]
    argv = [a for a in argv if a not in files]
    given = {a.split("=")[0][2:] for a in argv if a.startswith("--")}
    from_files = []
    for flag in files:
        path = flag.split("=", 1)[1]
        with open(path, encoding="utf-8") as fin:
            mapping = yaml.safe_load(fin) or {}
        if not isinstance(mapping, dict):
            raise SystemExit(f"{path}: not a mapping of overrides")
        from_files += [
            f"--{key}={_flag_value(value)}"
            for key, value in mapping.items()
            if key not in given
        ]
    return argv[:1] + from_files + argv[1:], train_only


def _flag_value(value):
    """A YAML value as one command-line flag value (flow style)."""
    if isinstance(value, str):
        return value
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20)
    return text.strip().removesuffix("...").strip()


if __name__ == "__main__":
    argv, train_only = recipe_arguments(sys.argv[1:])
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    # The class list, and a record of the classes and the front end saved
    # with every checkpoint: loading one trained otherwise stops (resume,
    # stage-1 checkpoints, sed-export).
    run_on_main(
        write_class_list,
        args=[
            hparams["encoder"].classes,
            Path(hparams["output_folder"]) / "classes.txt",
        ],
    )
    metadata = ModelMetadata.from_hparams(hparams)
    hparams["checkpointer"].add_recoverable(
        "model_meta", metadata, optional_load=True
    )
    # A clip length the model cannot take (ATST-Frame: 10 s at most) or a
    # class/frame count that differs from the labels stops here.
    check_model_fits(
        hparams["frontend"], hparams["student"], hparams["encoder"]
    )
    # A class-wise median filter list must have one length per class.
    PostProcessing(
        hparams["encoder"].classes, median_filter=hparams["median_filter"]
    )
    # ATST-SED: the ATST-Frame checkpoint (stage 1) or the stage-1 result
    # (stage 2), before the data preparation so that a missing file stops
    # the run at once; CRNN recipes have neither and load nothing.
    load_pretrained(
        hparams["student"],
        hparams["teacher"],
        atst_ckpt=hparams.get("atst_ckpt"),
        stage1_ckpt=hparams.get("stage1_ckpt"),
        atst_random_init=hparams.get("atst_random_init", False),
        stage1_key=hparams.get("stage1_selection_key"),
        metadata=metadata,
        trust_checkpoint=hparams.get("trust_checkpoint", False),
    )
    # The contrastive heads: from an ATST-Frame pretraining checkpoint that
    # holds them, else random (the log says which).
    if "contrastive" in hparams["modules"]:
        hparams["modules"]["contrastive"].load_heads(
            hparams.get("contrastive_heads_ckpt"),
            trust_checkpoint=hparams.get("trust_checkpoint", False),
        )
    manifests = prepare_data(hparams)
    train_set, sampler, valid_set, test_set = dataio_prep(hparams, manifests)

    brain = SEDBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=brain_hparams(hparams, hparams_file),
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    eval_kwargs = {
        "batch_size": hparams["eval_batch_size"],
        "num_workers": hparams["num_workers"],
    }
    brain.fit(
        hparams["epoch_counter"],
        train_set,
        valid_set,
        train_loader_kwargs={
            "batch_sampler": sampler,
            "num_workers": hparams["num_workers"],
        },
        valid_loader_kwargs=eval_kwargs,
    )
    if not train_only:
        brain.evaluate(
            test_set,
            max_key=hparams["selection_key"],
            test_loader_kwargs=eval_kwargs,
        )
    # Leave the process group before exiting (gloo aborts otherwise).
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
