#!/usr/bin/env python3
"""Pretrain an ATST-Frame encoder on unlabeled audio (self-supervised).

    python train.py hparams/atst_frame_pretrain.yaml --data_folder=<audio>

``--data_folder`` is any folder of ``.wav`` / ``.flac`` files, searched
recursively: DESED's ``audio/train/unlabel_in_domain``, the unlabeled pool of
generated mini-DESED (``sed-mini-desed --scale ssl --unlabeled 8000``), or
recordings of your own domain. The run writes
``<output_folder>/atst_frame_pretrain.ckpt`` in ATST-Frame's pretraining
layout, which ATST-SED reads as it is (``recipes/DESED/SED/train.py
hparams/atst_sed_stage1.yaml --data_folder=<DESED>
--atst_ckpt=<output_folder>/atst_frame_pretrain.ckpt``).
Multi-GPU: ``torchrun --nproc_per_node=N train.py ...``. The same command
resumes a stopped or pre-empted run.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import logging
import sys

# Before torch allocates anything: huge pages for large CPU tensors and a
# heap that keeps freed memory (faster CPU steps, the same numbers).
from speechbrain_sed_condmix.allocator import configure_cpu_allocator

configure_cpu_allocator()

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_sed_condmix.dataio.unlabeled import (
    find_audio_files,
    make_unlabeled_dataset,
)
from speechbrain_sed_condmix.pretraining.brain import ATSTFramePretrainBrain

logger = logging.getLogger(__name__)


def brain_hparams(hparams, hparams_file):
    """The hyperparameters that ATSTFramePretrainBrain reads, and the
    SpeechBrain run options set in the YAML."""
    from speechbrain.utils.run_opts import RunOptions

    run_options = {
        key: hparams[key] for key in RunOptions().as_dict() if key in hparams
    }
    try:
        keys = {
            "mixup": hparams["mixup"],
            "view_augment": hparams["view_augment"],
            "mask": hparams["mask"],
            "schedule": hparams["schedule"],
            "batch_size": hparams["batch_size"],
            "export_path": hparams["export_path"],
            "hyper_parameters": hparams["hyper_parameters"],
            "train_logger": hparams["train_logger"],
            "epoch_counter": hparams["epoch_counter"],
        }
    except KeyError as missing:
        raise SystemExit(
            f"{hparams_file}: no key {missing}, which ATSTFramePretrainBrain "
            "reads (see brain_hparams in recipes/DESED/SSL/train.py)"
        ) from None
    return {**run_options, **keys}


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    files = find_audio_files(hparams["data_folder"])
    train_set = make_unlabeled_dataset(
        files, hparams["sample_rate"], hparams["crop_seconds"]
    )
    logger.info(
        "Pretraining on %d audio files under %s",
        len(files),
        hparams["data_folder"],
    )
    brain = ATSTFramePretrainBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=brain_hparams(hparams, hparams_file),
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        hparams["epoch_counter"],
        train_set,
        train_loader_kwargs=hparams["train_dataloader_opts"],
    )
    # Leave the process group before exiting (gloo aborts otherwise).
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
