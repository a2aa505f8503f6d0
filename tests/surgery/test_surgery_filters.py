"""The filter-pruning baseline: filter counts, selection, channel surgery, per-filter scores, plans."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_batchnorm

import layerlottery as ll
from layerlottery.criteria.base import ClassBalanceWarning
from layerlottery.criteria.common import aggregate
from layerlottery.criteria.filters import aggregate_rows, filter_scores
from layerlottery.errors import ConfigError, PruningError
from layerlottery.surgery.filters import (
    FilterPlan,
    apply_filter_plan,
    count_filters,
    filter_sites,
    filter_ticket_at_init,
    filters_to_remove_for,
    min_kept,
    remove_filters,
    select_filters,
)

SMALL = {"shortcut": "B", "image_size": 8}  # test_resnet: widths 4/8/8, 3 blocks per stage


def small_model(seed: int = 0, **options) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ll.create_model("test_resnet", **{**SMALL, **options})


def small_batch(n: int = 20, classes: int = 10, size: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=generator), torch.arange(n) % classes


# ------------------------------------------------------------------------------------------ counting


def test_resnet32_counts_the_papers_1232_filters_and_p1_leaves_1200():
    dense = ll.create_model("cifar_resnet32", shortcut="B")
    # stem 16 + 5 blocks x 2 convs x (16 + 32 + 64) + projections 32 + 64
    assert count_filters(dense) == 16 + 5 * 2 * (16 + 32 + 64) + 32 + 64 == 1232
    assert count_filters(ll.create_model("cifar_resnet32", shortcut="A")) == 1232 - 96
    # p = 1 leaves 1200 when the removed block is a stage-1 block (2 convs x 16 filters), as the paper says.
    assert filters_to_remove_for(dense, ["layer1.3"]) == 32
    assert count_filters(ll.remove_blocks(dense, ["layer1.3"])) == 1200
    assert filters_to_remove_for(dense, ["layer2.2"]) == 64
    assert filters_to_remove_for(dense, ["layer1.1", "layer3.4"]) == 32 + 128


def test_filter_sites_are_every_blocks_first_conv():
    sites = filter_sites(small_model())
    assert [site.conv for site in sites] == [f"layer{s}.{i}.conv1" for s in (1, 2, 3) for i in range(3)]
    assert [site.width for site in sites] == [4, 4, 4, 8, 8, 8, 8, 8, 8]
    assert sites[3].bn == "layer2.0.bn1" and sites[3].next_conv == "layer2.0.conv2"
    with pytest.raises(PruningError, match="no residual blocks"):
        filter_sites(ll.create_model("test_plain_cnn"))


# ------------------------------------------------------------------------------------------ selection


def test_select_filters_ranks_globally_and_keeps_a_minimum_per_conv():
    scores = {"a": [5.0, 1.0, 3.0], "b": [0.5, 2.0, 0.1, 4.0]}
    assert select_filters(scores, 3) == {"a": [1], "b": [0, 2]}
    assert select_filters(scores, 0) == {"a": [], "b": []}
    # "b" may lose only 3 of 4 (keeps 1): the 6th-lowest overall (b's 4.0) is skipped for a's 5.0.
    assert select_filters(scores, 5) == {"a": [1, 2], "b": [0, 1, 2]}
    assert select_filters(scores, 5) == select_filters(scores, 5, min_keep_fraction=0.25)
    # min_keep_fraction=0.5 keeps ceil(1.5) = 2 of a and 2 of b.
    assert min_kept(3, 0.5) == 2 and min_kept(4, 0.5) == 2 and min_kept(64, 0.0) == 1
    assert select_filters(scores, 3, min_keep_fraction=0.5) == {"a": [1], "b": [0, 2]}
    with pytest.raises(PruningError, match="only 3 filters"):
        select_filters(scores, 4, min_keep_fraction=0.5)
    with pytest.raises(PruningError, match="only 5 filters"):
        select_filters(scores, 6)
    with pytest.raises(ConfigError, match="n_filters_to_remove"):
        select_filters(scores, -1)


def test_select_filters_breaks_ties_by_network_order_then_index():
    assert select_filters({"a": [1.0, 0.0, 0.0], "b": [0.0, 1.0]}, 2) == {"a": [1, 2], "b": []}
    assert select_filters({"a": [1.0, 0.0, 0.0], "b": [0.0, 1.0]}, 3) == {"a": [1, 2], "b": [0]}


# -------------------------------------------------------------------------------------------- surgery


@pytest.mark.parametrize(("block", "removed"), [("layer1.1", [0, 2]), ("layer2.0", [1, 4, 5]), ("layer3.2", [7])])
def test_removed_filters_save_exactly_their_macs_and_params(block, removed):
    dense = small_model()
    conv1 = dense.get_submodule(f"{block}.conv1")
    conv2 = dense.get_submodule(f"{block}.conv2")
    c_in, c_out, k = conv1.in_channels, conv2.out_channels, len(removed)
    _, height, width = ll.find_blocks(dense)[block].output_shape  # conv1's output size, which conv2 keeps
    pruned = remove_filters(dense, {f"{block}.conv1": removed})

    # Each removed filter: a 3x3xC_in kernel at every output pixel of conv1, and its 3x3 input slice of
    # every conv2 filter at every output pixel of conv2; parameters: the two kernels and BN's weight + bias.
    saved_macs = k * 9 * c_in * height * width + k * 9 * c_out * height * width
    saved_params = k * 9 * c_in + 2 * k + k * 9 * c_out
    assert ll.count_macs(dense) - ll.count_macs(pruned) == saved_macs
    assert ll.count_params(dense) - ll.count_params(pruned) == saved_params
    assert count_filters(dense) - count_filters(pruned) == k
    assert pruned.get_submodule(f"{block}.conv1").weight.shape == (conv1.out_channels - k, c_in, 3, 3)
    assert pruned.get_submodule(f"{block}.conv2").weight.shape == (c_out, conv1.out_channels - k, 3, 3)
    assert pruned.get_submodule(f"{block}.bn1").num_features == conv1.out_channels - k


def test_kept_weights_and_statistics_are_bitwise_slices_of_the_original():
    dense = randomize_batchnorm(small_model())
    removed = {"layer1.0.conv1": [3], "layer2.0.conv1": [0, 5], "layer3.1.conv1": [2, 3, 7]}
    before = {key: value.clone() for key, value in dense.state_dict().items()}
    pruned = remove_filters(dense, removed).state_dict()
    expected = dict(before)
    for conv, indices in removed.items():
        block = conv.removesuffix(".conv1")
        keep = [i for i in range(before[f"{block}.bn1.weight"].numel()) if i not in indices]
        for key in ("conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"):
            expected[f"{block}.{key}"] = before[f"{block}.{key}"][keep]
        expected[f"{block}.conv2.weight"] = before[f"{block}.conv2.weight"][:, keep]
    assert set(pruned) == set(expected)
    for key, value in expected.items():
        assert pruned[key].dtype == value.dtype and torch.equal(pruned[key], value), key
        assert torch.equal(dense.state_dict()[key], before[key]), key  # the dense model is untouched


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_removing_filters_equals_zeroing_them(shortcut):
    torch.manual_seed(3)
    dense = randomize_batchnorm(ll.create_model("cifar_resnet20", shortcut=shortcut, image_size=16)).double().eval()
    removed = {"layer1.0.conv1": [0, 5, 15], "layer2.0.conv1": [31], "layer3.2.conv1": list(range(0, 64, 3))}
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    pruned = remove_filters(dense, removed).eval()
    zeroed = randomize_batchnorm(ll.create_model("cifar_resnet20", shortcut=shortcut, image_size=16)).double().eval()
    zeroed.load_state_dict(dense.state_dict())
    with torch.no_grad():
        for conv, indices in removed.items():
            bn = zeroed.get_submodule(conv.replace("conv1", "bn1"))
            zeroed.get_submodule(conv).weight[indices] = 0
            bn.weight[indices] = 0  # eval BN: gamma * (0 - mean) / std + beta = 0 for gamma = beta = 0
            bn.bias[indices] = 0
        out, reference, full = pruned(x), zeroed(x), dense(x)
    assert out.shape == full.shape == (3, 10)
    torch.testing.assert_close(out, reference, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(out, full, atol=1e-4)  # the filters mattered: the comparison is not vacuous


def test_pruned_network_trains_and_keeps_its_output_shape():
    pruned = remove_filters(small_model(), {"layer1.2.conv1": [0, 1], "layer3.0.conv1": [4]})
    x, y = small_batch(8)
    optimizer = torch.optim.SGD(pruned.parameters(), lr=0.1)
    loss = F.cross_entropy(pruned.train()(x), y)
    loss.backward()
    optimizer.step()
    assert pruned(x).shape == (8, 10)
    assert all(p.grad is not None and p.requires_grad for p in pruned.parameters())


def test_remove_filters_refuses_bad_requests():
    dense = small_model()
    with pytest.raises(PruningError, match="not the first conv"):
        remove_filters(dense, {"layer1.0.conv2": [0]})
    with pytest.raises(PruningError, match="keep at least one"):
        remove_filters(dense, {"layer1.0.conv1": [0, 1, 2, 3]})
    with pytest.raises(PruningError, match=r"in 0\.\.3"):
        remove_filters(dense, {"layer1.0.conv1": [4]})
    with pytest.raises(PruningError, match="distinct"):
        remove_filters(dense, {"layer1.0.conv1": [1, 1]})


# --------------------------------------------------------------------------------------------- scores


def test_aggregate_rows_is_aggregate_per_filter():
    torch.manual_seed(0)
    first, second = torch.randn(5, 7), torch.randn(5, 3)
    for how in ("sum", "mean", "abs_sum"):
        rows = aggregate_rows([first, second], how)
        for j in range(5):
            assert rows[j].item() == pytest.approx(aggregate([first[j], second[j]], how), rel=1e-12)


def test_snip_filter_scores_match_a_hand_computed_gradient():
    dense = small_model()
    x, y = small_batch()
    before = {key: value.clone() for key, value in dense.state_dict().items()}
    scores = filter_scores(dense, "snip", (x, y))
    assert all(torch.equal(value, before[key]) for key, value in dense.state_dict().items())

    # Oracle: |dL/dw * w| on a copy in BN train mode, summed over each filter's conv1 kernel.
    model = small_model().train()
    weights = [model.get_submodule(site.conv).weight for site in filter_sites(model)]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), weights)
    for site, w, g in zip(filter_sites(model), weights, grads):
        expected = (g * w).abs().flatten(1).sum(1)
        torch.testing.assert_close(torch.tensor(scores.scores[site.conv], dtype=torch.float32), expected, rtol=1e-5, atol=1e-9)
    assert scores.options == {"aggregation": "sum", "bn_mode": "train", "filter_weights": "conv1"}


@pytest.mark.parametrize("criterion", ["snip", "grasp"])
def test_conv1_plus_conv2_filter_scores_sum_to_the_block_score(criterion):
    # Over a removable block's filters, conv1 kernels plus conv2 input slices cover both convs' weights once,
    # so the per-filter sums add up to the block criterion's score: the same per-weight scores, regrouped.
    dense = small_model()
    data = small_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClassBalanceWarning)
        blocks = ll.score_blocks(dense, criterion, data)
        filters = filter_scores(dense, criterion, data, filter_weights="conv1+conv2")
    for block, value in blocks.items():
        assert sum(filters.scores[f"{block}.conv1"]) == pytest.approx(value, rel=1e-5, abs=1e-12)
    assert filters.options["filter_weights"] == "conv1+conv2"


def test_filter_scores_refuse_unsupported_settings():
    dense, data = small_model(), small_batch()
    with pytest.raises(ConfigError, match="choose one of: snip, grasp"):
        filter_scores(dense, "synflow", data)
    with pytest.raises(ConfigError, match="filter_weights"):
        filter_scores(dense, "snip", data, filter_weights="conv2")
    with pytest.raises(ConfigError, match="no option 'temperature'"):
        filter_scores(dense, "snip", data, temperature=2.0)
    with pytest.raises(ConfigError, match="needs data"):
        filter_scores(dense, "snip", None)


# ---------------------------------------------------------------------------------------- plan, ticket


@pytest.mark.parametrize("criterion", ["snip", "grasp"])
def test_filter_ticket_plan_replays_from_json(criterion, tmp_path):
    options = {**SMALL, "num_classes": 4}
    batch = small_batch(n=12, classes=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ClassBalanceWarning)  # 3 per class of 4 classes: balanced as asked
        pruned, plan = filter_ticket_at_init(
            "test_resnet", criterion, batch, 10, seed=7, model_options=options,
            criterion_options={"aggregation": "abs_sum"}, samples_per_class=3,
        )
    assert plan.n_removed == 10 and plan.dense_filters - plan.pruned_filters == 10
    assert plan.pruned_filters == count_filters(pruned)
    assert plan.pruned_macs == ll.count_macs(pruned) < plan.dense_macs
    assert plan.pruned_params == ll.count_params(pruned) < plan.dense_params
    assert plan.criterion == criterion and plan.criterion_options["aggregation"] == "abs_sum"
    assert plan.selection["n_filters_to_remove"] == 10
    assert plan.criterion_options.get("samples_per_class", 3) == 3  # recorded for grasp, absent for snip
    # The removed filters are the lowest-scoring ones the selection picks from the recorded scores.
    assert plan.removed == select_filters(plan.scores, 10)

    path = plan.save(tmp_path / "filter_plan.json")
    loaded = FilterPlan.load(path)
    assert loaded == plan
    rebuilt = loaded.build_model().state_dict()
    assert set(rebuilt) == set(pruned.state_dict())
    assert all(torch.equal(rebuilt[key], value) for key, value in pruned.state_dict().items())


def test_filter_plan_refuses_another_architecture_and_foreign_json():
    _, plan = filter_ticket_at_init("test_resnet", "snip", small_batch(), 3, model_options=SMALL)
    with pytest.raises(PruningError, match="do not match the filter plan"):
        apply_filter_plan(ll.create_model("cifar_resnet20", image_size=8), plan)
    # 3 x 4 + 6 x 8 = 60 first-conv filters, 1 kept per conv: 51 can go. Refused before scoring (no data needed).
    with pytest.raises(PruningError, match="n_filters_to_remove=52 but only 51 filters"):
        filter_ticket_at_init("test_resnet", "grasp", None, 52, model_options=SMALL)
    with pytest.raises(ConfigError, match="not a layerlottery filter plan"):
        FilterPlan.from_json(ll.RemovalPlan(removed=("layer1.1",)).to_json())


def test_filter_ticket_reproduces_the_papers_target_on_resnet32():
    # The paper's comparison on ResNet-32: a p = 1 layer ticket removing a stage-1 block leaves 1200 filters,
    # so the baseline removes 32 filters. Scores on 1 image per class at 8x8 keep this test fast.
    dense = ll.create_model("cifar_resnet32", shortcut="B")
    target = filters_to_remove_for(dense, ["layer1.1"])
    x, y = small_batch(n=10, size=8)
    pruned, plan = filter_ticket_at_init(
        "cifar_resnet32", "snip", (x, y), target, model_options={"shortcut": "B", "image_size": 8}
    )
    assert (plan.dense_filters, plan.pruned_filters, count_filters(pruned)) == (1232, 1200, 1200)
