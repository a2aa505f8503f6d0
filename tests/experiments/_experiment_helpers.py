"""The tiny experiment the experiment tests share: test_resnet on 96 synthetic 8x8 images of 4 classes, CPU."""

from __future__ import annotations


def tiny_overrides(epochs: int, *extra: str) -> list[str]:
    """Overrides of the ``defaults`` preset for a tiny experiment of ``epochs`` epochs, then ``extra``."""
    return [
        "model.name=test_resnet",
        "data.name=synthetic",
        "data.options={num_samples: 96, image_size: 8, num_classes: 4}",
        "data.padding=1",
        f"train.epochs={epochs}",
        "train.batch_size=16",
        "train.lr=0.05",
        "train.device=cpu",
        "carbon.enabled=false",
        *extra,
    ]
