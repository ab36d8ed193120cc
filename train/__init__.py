"""Trainer for efficientnet_tf: data side (preprocessing, augmentation, datasets, input)."""
