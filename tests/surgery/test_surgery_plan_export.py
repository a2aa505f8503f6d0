import subprocess
import sys

import pytest
import torch
from conftest import randomize_batchnorm

import layerlottery as ll

OPTIONS = {"shortcut": "B", "num_classes": 7}


@pytest.fixture
def dense_and_plan():
    torch.manual_seed(0)
    dense = randomize_batchnorm(ll.create_model("cifar_resnet20", **OPTIONS))
    blocks = ll.find_blocks(dense)
    scores = ll.score_blocks(dense, "magnitude")
    return dense, ll.select_blocks(blocks, scores, p=2, model="cifar_resnet20", model_options=OPTIONS)


def test_plan_json_round_trip_replays_to_an_identical_model(dense_and_plan, tmp_path):
    dense, plan = dense_and_plan
    replayed_plan = ll.RemovalPlan.load(plan.save(tmp_path / "plan.json"))
    assert replayed_plan == plan and ll.RemovalPlan.from_json(plan.to_json()) == plan
    assert replayed_plan.criterion == "magnitude" and replayed_plan.criterion_options["aggregation"] == "mean"

    fresh = ll.create_model(replayed_plan.model, **replayed_plan.model_options)
    fresh.load_state_dict(dense.state_dict())
    a, b = ll.remove_blocks(dense, plan), ll.remove_blocks(fresh, replayed_plan)
    assert str(a) == str(b)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert plan.build_model().state_dict().keys() == a.state_dict().keys()


def test_corrupt_or_foreign_plans_are_refused():
    with pytest.raises(ll.ConfigError, match="not valid JSON"):
        ll.RemovalPlan.from_json("{removed")
    with pytest.raises(ll.ConfigError, match="format 99 is not supported"):
        ll.RemovalPlan.from_json('{"removed": [], "format_version": 99}')
    with pytest.raises(ll.ConfigError, match="unknown fields"):
        ll.RemovalPlan.from_json('{"removed": [], "colour": 1}')


def test_save_and_load_pruned_gives_identical_outputs(dense_and_plan, tmp_path):
    dense, plan = dense_and_plan
    pruned = ll.remove_blocks(dense, plan).eval()
    path = ll.save_pruned(pruned, plan, tmp_path / "pruned.pt")
    loaded, loaded_plan = ll.load_pruned(path)
    x = torch.randn(3, 3, 32, 32)
    assert loaded_plan == plan
    assert torch.equal(loaded.eval()(x), pruned(x))
    assert [p.name for p in tmp_path.iterdir()] == ["pruned.pt"]  # no temp files left behind


def test_load_pruned_refuses_corrupt_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ll.DataError, match="not a readable layerlottery pruned model"):
        ll.load_pruned(bad)
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ll.DataError, match="not written by layerlottery"):
        ll.load_pruned(tmp_path / "foreign.pt")


def test_exported_program_loads_with_plain_pytorch(dense_and_plan, tmp_path):
    dense, plan = dense_and_plan
    pruned = ll.remove_blocks(dense, plan).eval()
    path = ll.export_program(pruned, tmp_path / "pruned.pt2")
    x = torch.randn(5, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(pruned(x), tmp_path / "expected.pt")
    # A fresh interpreter in which importing layerlottery is impossible.
    script = f"""
import sys
sys.modules["layerlottery"] = None
import torch
program = torch.export.load({str(path)!r}).module()
x = torch.load({str(tmp_path / 'x.pt')!r})
expected = torch.load({str(tmp_path / 'expected.pt')!r})
out = program(x)
assert out.shape == (5, 7), out.shape
assert torch.allclose(out, expected, rtol=1e-5, atol=1e-5), (out - expected).abs().max()
assert program(x[:1]).shape == (1, 7)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
