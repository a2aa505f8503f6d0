"""Whole experiments on other libraries' networks through settings: a torchvision ResNet on an image folder, a
tiny timm ViT on synthetic gray images with contiguous selection. Tickets cost exactly the dense MACs minus
their removed blocks', and each run's plan rebuilds its network."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import layerlottery as ll
from layerlottery.config import load_settings
from layerlottery.experiments.tickets import run_experiment
from layerlottery.surgery import RemovalPlan


def image_folder(root, classes=("cat", "dog", "eel")):
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / split / name / f"{i}.png")
    return root


COMMON = ["train.epochs=1", "train.batch_size=8", "train.device=cpu", "carbon.enabled=false", "seeds=[0]", "pruning.p=[1]"]


def run(tmp_path, *overrides):
    settings = load_settings("defaults", [*COMMON, f"runs_dir={tmp_path / 'runs'}", *overrides])
    return settings, run_experiment(settings, progress=False, log=lambda _: None)


def check_ticket(settings, result, blocks, selection: str) -> dict:
    """The ticket costs the dense MACs minus its removed blocks', and its plan rebuilds a network of that cost."""
    dense, ticket = result.runs
    assert dense["kind"] == "dense" and ticket["kind"] == "ticket"
    assert dense["macs"] == blocks.total_macs
    assert ticket["macs"] == blocks.total_macs - sum(blocks[name].macs for name in ticket["removed"])
    plan = RemovalPlan.load(f"{settings.runs_dir}/{ticket['name']}")
    assert plan.selection_rule == selection and list(plan.removed) == ticket["removed"]
    assert ll.count_macs(plan.build_model()) == ticket["macs"]
    return ticket


def test_a_torchvision_resnet_on_an_image_folder(tmp_path):
    folder = image_folder(tmp_path / "images")
    settings, result = run(
        tmp_path, "model.name=torchvision:resnet18", "data.name=folder", f"data.data_dir={folder}",
        "data.image_size=16", "data.workers=0", "pruning.criteria=[magnitude]",
        "pruning.min_per_stage=1",
    )
    blocks = ll.find_blocks(ll.create_model("torchvision:resnet18", num_classes=3, image_size=16))
    assert len(check_ticket(settings, result, blocks, "greedy")["removed"]) == 1


def test_a_tiny_timm_vit_on_gray_images_with_contiguous_selection(tmp_path):
    vit = {"patch_size": 4, "depth": 4, "embed_dim": 32, "num_heads": 2}
    settings, result = run(
        tmp_path, "model.name=timm:vit_tiny_patch16_224", f"model.options={vit}".replace("'", ""),
        "data.name=synthetic", "data.options={num_samples: 48, image_size: 8, num_classes: 4, channels: 1}",
        "data.padding=1", "pruning.criteria=[magnitude]", "pruning.selection=contiguous", "pruning.p=[2]",
    )
    blocks = ll.find_blocks(ll.create_model("timm:vit_tiny_patch16_224", num_classes=4, in_channels=1, image_size=8, **vit))
    ticket = check_ticket(settings, result, blocks, "contiguous")
    assert ticket["removed"] in (["blocks.1", "blocks.2"], ["blocks.2", "blocks.3"])  # adjacent; blocks.0 is protected


def test_settings_refuse_a_network_the_rules_cannot_prune(tmp_path):
    with pytest.raises(ll.PruningError, match="torchvision:resnet18 allows at most 0"):
        run(tmp_path, "model.name=torchvision:resnet18", "data.name=synthetic")
