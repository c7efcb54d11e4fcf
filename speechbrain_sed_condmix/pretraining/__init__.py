"""ATST-Frame self-supervised pretraining (BYOL on masked frames).

* :mod:`~.views`: the block mask, the memory-bank mixup and the frequency
  crop that make the two views;
* :mod:`~.model`: the student, the momentum teacher, the loss and the
  checkpoint layout;
* :mod:`~.schedules`: AdamW groups, learning-rate, weight-decay and
  momentum schedules;
* :mod:`~.brain`: :class:`~.brain.ATSTFramePretrainBrain`.

Authors
 * speechbrain-sed-condmix contributors 2026
"""
