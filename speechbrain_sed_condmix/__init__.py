"""Semi-supervised sound event detection for SpeechBrain.

ATST-SED, ATST-SEDv2 (conditional mixup and an embedding-level contrastive
loss next to Mean Teacher pseudo-labels) and the DCASE CRNN baseline, as
SpeechBrain components and recipes.
"""

__version__ = "0.1.0"
