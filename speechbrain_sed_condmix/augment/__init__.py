"""Data augmentation: mixup variants and spectrogram augmentations."""
