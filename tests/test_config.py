"""Settings: YAML presets, overrides, one-line validation errors, and stable run hashes."""

import dataclasses

import pytest

from layerlottery import ConfigError
from layerlottery.config import (
    DataSettings,
    ExperimentSettings,
    ModelSettings,
    TrainSettings,
    from_dict,
    hashed_dict,
    list_presets,
    load_settings,
    settings_hash,
    to_dict,
)
from layerlottery.experiments.runs import RunSpec, TicketSpec


def test_presets_load_and_validate():
    assert {"quickstart", "mnist_cpu", "paper_resnet32", "paper_resnet56", "he_resnet32"} <= set(list_presets())
    for name in list_presets():
        load_settings(name)
    paper = load_settings("paper_resnet32")
    assert paper.train.milestone_epochs() == [100, 150] and paper.train.nesterov and paper.train.lr == 0.01
    assert paper.pruning.p == (1, 2, 3, 4, 5) and paper.seeds == (0, 1, 2) and paper.model.shortcut == "B"
    he = load_settings("he_resnet32")
    assert he.train.lr == 0.1 and not he.train.nesterov


def test_overrides_are_typed_and_nested():
    settings = load_settings("quickstart", ["train.epochs=3", "pruning.criteria=[grasp]", "pruning.p=2", "seeds=[4,5]", "data.options={num_samples: 64}"])
    assert settings.train.epochs == 3 and settings.pruning.criteria == ("grasp",)
    assert settings.pruning.p == (2,) and settings.seeds == (4, 5) and settings.data.options == {"num_samples": 64}
    assert isinstance(load_settings("quickstart", ["train.lr=1"]).train.lr, float)


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epoch=3", "unknown setting train.epoch; did you mean epochs?"),
        ("train.epochs=three", "train.epochs must be a whole number"),
        ("train.lr=-0.1", "train.lr must be > 0"),
        ("train.schedule=linear", "train.schedule must be one of multistep, cosine, constant"),
        ("train.milestones=[0.75,0.5]", "train.milestones must increase"),
        ("pruning.criteria=[grasp,hrank]", "pruning: unknown criterion 'hrank'"),
        ("pruning.criterion_options={grasp: {temperature: 0}}", "invalid option temperature=0"),
        ("pruning.p=[0]", "pruning.p must list block counts >= 1"),
        ("model.name=resnet33", "model.name: unknown model 'resnet33'"),
        ("data.name=imagenet", "data.name: unknown dataset 'imagenet'"),
        ("carbon.country_iso_code=US", "three-letter code"),
        ("seeds=[1,1]", "seeds repeat"),
        ("train.nesterov=maybe", "train.nesterov must be true or false"),
        ("epochs", "must look like section.name=value"),
    ],
)
def test_bad_settings_are_one_clear_line(override, message):
    with pytest.raises(ConfigError) as info:
        load_settings("quickstart", [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_or_broken_preset(tmp_path):
    with pytest.raises(ConfigError, match="preset nosuch not found; give a YAML file or one of: .*quickstart"):
        load_settings("nosuch")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [epochs\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)


def test_round_trip_through_plain_data():
    settings = load_settings("paper_resnet32", ["pruning.criterion_options={grasp: {variant: abs}}"])
    assert from_dict(ExperimentSettings, to_dict(settings)) == settings


def test_hash_leaves_out_defaults_and_settings_that_do_not_change_results():
    base = ExperimentSettings()
    assert hashed_dict(base) == {}
    moved = dataclasses.replace(base, runs_dir="elsewhere", xi=0.5, name="x", train=dataclasses.replace(base.train, device="cpu", eval_every=5))
    assert settings_hash(moved) == settings_hash(base)
    changed = dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=30))
    assert hashed_dict(changed) == {"train": {"epochs": 30}} and settings_hash(changed) != settings_hash(base)


def test_a_new_setting_with_a_no_op_default_keeps_old_hashes():
    @dataclasses.dataclass(frozen=True)
    class TrainSettingsWithLabelSmoothing(TrainSettings):
        label_smoothing: float = 0.0

    old = RunSpec(ModelSettings(), DataSettings(name="digits"), TrainSettings(epochs=15))
    new = RunSpec(ModelSettings(), DataSettings(name="digits"), TrainSettingsWithLabelSmoothing(epochs=15))
    assert settings_hash(new) == settings_hash(old)


def test_pinned_run_hashes():
    """Run directories are named by these hashes: changing them orphans every existing run."""
    dense = RunSpec(ModelSettings(name="cifar_resnet20"), DataSettings(name="digits", padding=1), TrainSettings(epochs=15))
    ticket = dataclasses.replace(dense, seed=1, ticket=TicketSpec(criterion="grasp", p=3))
    assert dense.name == "dense-" + settings_hash(dense)
    assert settings_hash(dense) == "1a9a10a8d958"
    assert settings_hash(ticket) == "d0ecf0c5fe25"
    assert hashed_dict(ticket) == {
        "model": {"name": "cifar_resnet20"},
        "data": {"name": "digits", "padding": 1},
        "train": {"epochs": 15},
        "seed": 1,
        "ticket": {"criterion": "grasp", "p": 3},
    }
    assert settings_hash(load_settings("paper_resnet32")) == "d32a2a5b21cf"
