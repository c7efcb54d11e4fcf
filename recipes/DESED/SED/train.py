#!/usr/bin/env python3
"""Train and evaluate a semi-supervised SED system on DESED.

    python train.py hparams/crnn_mt.yaml --data_folder=/path/to/DESED
    python train.py hparams/atst_sed_stage1.yaml --data_folder=... \
        --atst_ckpt=/path/to/atst_as2M.ckpt
    python train.py hparams/atst_sed_stage2.yaml --data_folder=... \
        --stage1_ckpt=results/atst_sed_stage1/42

The same command runs on generated mini-DESED (``sed-mini-desed``), which
shares DESED's layout. Multi-GPU: ``torchrun --nproc_per_node=N train.py ...``.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main
from torch.utils.data import ConcatDataset

from speechbrain_sed_condmix.brain import SEDBrain
from speechbrain_sed_condmix.dataio.desed import prepare_desed
from speechbrain_sed_condmix.dataio.pipelines import make_sed_dataset
from speechbrain_sed_condmix.dataio.sampler import MultiSourceBatchSampler
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


def dataio_prep(hparams, manifests):
    """Build the train set with its batch sampler, and valid/test sets."""
    encoder = hparams["encoder"]
    train_parts = [
        make_sed_dataset(manifests[name], encoder, train=True)
        for name in hparams["train_subsets"]
    ]
    sampler = MultiSourceBatchSampler(
        train_parts, hparams["batch_sizes"], seed=hparams["seed"]
    )
    valid = ConcatDataset(
        [
            make_sed_dataset(manifests[n], encoder)
            for n in hparams["valid_subsets"]
        ]
    )
    test = make_sed_dataset(manifests[hparams["test_subset"]], encoder)
    return ConcatDataset(train_parts), sampler, valid, test


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
    )
    prep_kwargs = {
        "data_folder": hparams["data_folder"],
        "save_folder": hparams["prep_folder"],
        "subsets": layout_subsets(hparams),
        "classes": hparams["encoder"].classes,
        "sample_rate": hparams["sample_rate"],
        "skip_bad": hparams["skip_bad"],
        "num_workers": hparams["prep_workers"],
    }
    run_on_main(prepare_desed, kwargs=prep_kwargs)
    # Every rank reads the outputs; the main process prepared them above, so
    # this call finds its marker and returns at once.
    manifests = prepare_desed(**prep_kwargs, progress=False)
    train_set, sampler, valid_set, test_set = dataio_prep(hparams, manifests)

    brain = SEDBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
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
    brain.evaluate(
        test_set,
        max_key=hparams["selection_key"],
        test_loader_kwargs=eval_kwargs,
    )
    # Leave the process group before exiting (gloo aborts otherwise).
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
