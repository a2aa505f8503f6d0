"""torchvision:NAME and timm:NAME networks: built fitted to the data, seeded like every model, pruned, replayed.

No downloads: pretrained weights are replaced by a stand-in state dict where a test needs them.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from layerlottery.cli import app
from layerlottery.errors import ConfigError, PruningError
from layerlottery.experiments import ticket_at_init
from layerlottery.experiments.at_init import initial_model
from layerlottery.models import create_model
from layerlottery.models.blocks import find_blocks
from layerlottery.models.registry import list_model_sources
from layerlottery.surgery import RemovalPlan
from layerlottery.surgery.export import load_pruned

RESNET18 = "torchvision:resnet18"
SMALL = {"num_classes": 5, "in_channels": 3, "image_size": 32}
TINY_VIT = ("timm:vit_tiny_patch16_224", {"num_classes": 4, "in_channels": 1, "image_size": 8, "patch_size": 4, "depth": 3, "embed_dim": 32, "num_heads": 2})


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "name, options",
    [(RESNET18, SMALL), ("timm:resnet18", SMALL), TINY_VIT],
)
def test_theta_0_is_a_function_of_the_seed_alone(name, options):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = initial_model(name, options, seed=7)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is untouched
    assert same_weights(first, initial_model(name, options, seed=7))
    assert not same_weights(first, initial_model(name, options, seed=8))


def test_a_torchvision_resnet_fits_the_data_and_shows_its_blocks():
    model = create_model(RESNET18, **SMALL)
    assert model.default_input_shape == (3, 32, 32) and model.fc.out_features == 5
    blocks = find_blocks(model)
    assert [b.name for b in blocks if b.removable] == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    assert {b.reason for b in blocks if not b.removable} == {"projection/downsampling shortcut"}
    assert blocks["layer1.1"].input_shape == (64, 8, 8)  # 32 -> stem /2 -> max pool /2


def test_one_channel_images_see_the_rgb_stem_summed():
    """conv(w, [g, g, g]) = conv(sum of w over RGB, g): the gray network is the colour one on the gray image."""
    gray = initial_model(RESNET18, {**SMALL, "in_channels": 1}, seed=3).eval()
    colour = initial_model(RESNET18, SMALL, seed=3).eval()
    assert gray.conv1.weight.shape[1] == 1 and gray.default_input_shape == (1, 32, 32)
    images = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(gray(images), colour(images.repeat(1, 3, 1, 1)), rtol=1e-5, atol=1e-5)


def test_pretrained_weights_with_another_class_count_get_a_fresh_seeded_head(monkeypatch):
    stand_in = torchvision.models.resnet18(num_classes=1000).state_dict()  # what the download would hold
    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", lambda self, *a, **k: stand_in)
    model = initial_model(RESNET18, {**SMALL, "weights": "IMAGENET1K_V1"}, seed=1)
    assert model.fc.out_features == 5
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(v, stand_in[k]) for k, v in kept.items())
    assert same_weights(model, initial_model(RESNET18, {**SMALL, "weights": "DEFAULT"}, seed=1))


def test_zero_init_residual_means_the_same_for_torchvision_and_timm():
    zeroed = create_model(RESNET18, zero_init_residual=True)
    assert not zeroed.layer1[0].bn2.weight.any()
    # timm zero-initializes its ResNets' last BN by default; layerlottery's setting (off) wins.
    assert create_model("timm:resnet18").layer1[0].bn2.weight.eq(1).all()
    assert not create_model("timm:resnet18", zero_init_residual=True).layer1[0].bn2.weight.any()


def test_a_timm_vit_takes_the_data_shape_and_extra_options():
    name, options = TINY_VIT
    model = create_model(name, **options)
    assert model.default_input_shape == (1, 8, 8) and len(model.blocks) == 3 and model.head.out_features == 4
    assert [b.name for b in find_blocks(model) if b.removable] == ["blocks.0", "blocks.1", "blocks.2"]


@pytest.mark.parametrize(
    "name, options, words",
    [
        ("torchvision:resnt18", {}, ["no classification model 'resnt18'", "torchvision:resnet18", "list_models"]),
        ("timm:resnt18", {}, ["no classification model 'resnt18'", "timm:resnet18"]),
        (RESNET18, {"shortcut": "A"}, ["CIFAR ResNets only"]),
        (RESNET18, {"in_channels": 4}, ["3-channel", "timm"]),
        (RESNET18, {"dropout": 0.5}, ["does not take these options", "dropout"]),
        ("torchvision:vgg11", {"zero_init_residual": True}, ["zero_init_residual"]),
        (RESNET18, {"weights": "IMAGENET9K"}, ["unknown weights 'IMAGENET9K'", "DEFAULT, IMAGENET1K_V1"]),
        ("timm:resnet18", {"in_chans": 1}, ["leave in_chans out", "in_channels"]),
        ("timm:vit_tiny_patch16_224", {"zero_init_residual": True}, ["no zero_init_residual"]),
        ("timm:vit_tiny_patch16_224", {"image_size": 8}, ["smaller than its 16x16 patches", "patch_size"]),
        (RESNET18, {"num_classes": 0}, ["num_classes must be a positive whole number"]),
    ],
)
def test_mistakes_are_one_line_naming_what_to_do(name, options, words):
    with pytest.raises(ConfigError) as caught:
        create_model(name, **options)
    message = str(caught.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_a_missing_timm_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'layerlottery\[timm\]'"):
        create_model("timm:resnet18")


def test_a_network_without_residual_blocks_is_refused():
    with pytest.raises(PruningError, match="AlexNet has no residual blocks"):
        find_blocks(create_model("torchvision:alexnet", num_classes=3, image_size=64))


def test_a_plan_rebuilds_the_pruned_network_bit_for_bit_and_saves_it(tmp_path):
    ticket = ticket_at_init(RESNET18, "magnitude", p=2, min_per_stage=1, seed=4, model_options=SMALL)
    assert ticket.plan.model == RESNET18 and ticket.plan.p == 2
    plan = RemovalPlan.from_json(ticket.plan.to_json())
    assert same_weights(plan.build_model(), ticket.pruned)
    from layerlottery.surgery.export import save_pruned

    loaded, _ = load_pruned(save_pruned(ticket.pruned, plan, tmp_path / "pruned.pt"))
    assert same_weights(loaded, ticket.pruned)


def test_the_cli_lists_the_sources_and_shows_a_torchvision_networks_blocks():
    runner = CliRunner()
    listed = {row["name"]: row["description"] for row in json.loads(runner.invoke(app, ["models", "--json"]).stdout)}
    for prefix, description in list_model_sources().items():
        assert listed[f"{prefix}:NAME"] == description
    assert {"torchvision:NAME", "timm:NAME"} <= set(listed)
    shown = runner.invoke(app, ["blocks", RESNET18, "--json"])
    assert shown.exit_code == 0, shown.output
    result = json.loads(shown.stdout)
    assert result["max_removable"] == 0  # two blocks per stage, the paper's minimum of two per stage
    assert [row["status"] for row in result["blocks"]][:3] == ["protected", "candidate", "fixed"]
    assert "projection/downsampling shortcut" in {row["reason"] for row in result["blocks"]}


@pytest.mark.parametrize(
    "args, words",
    [
        (["blocks", "torchvision:alexnet"], ["no residual blocks"]),
        (["blocks", "tv:resnet18"], ["unknown model source 'tv'"]),
        (["blocks", "timm:vit_tiny_patch16_224", "--model-option", "depth"], ["KEY=VALUE"]),
        (["prune", RESNET18, "-c", "magnitude", "-p", "1", "--out", "OUT"], ["cannot remove 1 blocks", "at most 0"]),
    ],
)
def test_cli_mistakes_are_one_line_and_exit_2(tmp_path, args, words):
    args = [str(tmp_path / "t") if a == "OUT" else a for a in args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "\n" not in line and all(word in line for word in words), line
    assert not (tmp_path / "t").exists()


def test_a_pruned_timm_vit_exports_for_plain_pytorch(tmp_path):
    from layerlottery.surgery.export import export_program

    name, options = TINY_VIT
    ticket = ticket_at_init(name, "magnitude", p=1, seed=0, model_options=options, selection="contiguous")
    pruned = ticket.pruned.eval()
    program = torch.export.load(export_program(pruned, tmp_path / "pruned.pt2")).module()
    images = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(program(images), pruned(images))
    assert len(pruned.blocks) == 2
