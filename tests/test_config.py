"""Settings: YAML presets, overrides, one-line validation errors, and stable run hashes."""

import dataclasses
import math
import re

import pytest

from layerlottery import ConfigError
from layerlottery.config import (
    DataSettings,
    ExperimentSettings,
    ModelSettings,
    TrainSettings,
    check_margin,
    check_seed,
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
        ("pruning.criteria=[grasp,hrankk]", "pruning: unknown criterion 'hrankk'"),
        ("pruning.criterion_options={grasp: {temperature: 0}}", "invalid option temperature=0"),
        ("pruning.p=[0]", "pruning.p must list block counts >= 1"),
        ("model.name=resnet33", "model.name: unknown model 'resnet33'"),
        ("data.name=imagenet", "data.name: unknown dataset 'imagenet'"),
        ("carbon.country_iso_code=US", "three-letter code"),
        ("seeds=[1,1]", "seeds repeat"),
        ("train.nesterov=maybe", "train.nesterov must be true or false"),
        ("epochs", "must look like section.name=value"),
        ("train.lr=fast", "train.lr must be a number, not 'fast'"),
        ("train.lr=nan", "train.lr must be a finite number"),
        ("train.lr=.nan", "train.lr must be a finite number"),
        ("train.weight_decay=.inf", "train.weight_decay must be a finite number"),
        ("train.gamma=1e999", "train.gamma must be a finite number"),
        ("xi=.nan", "xi must be a finite number"),
        ("xi=-1", "xi must be a finite number >= 0"),
        ("carbon.grid_intensity_g_per_kwh=.nan", "carbon.grid_intensity_g_per_kwh must be a finite number"),
        ("train.milestones=[.nan]", "train.milestones[0] must be a finite number"),
        ("seeds=[-5]", "seeds must be a whole number from 0 to 4294967295, not -5"),
        ("seeds=[4294967296]", "seeds must be a whole number from 0"),
        ("name=../x", "name must be a plain file name"),
        ("name=a/b", "name must be a plain file name"),
        ("name=..", "name must be a plain file name"),
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
    # The filter-pruning baseline (TicketSpec.structure, default "layers" left out) adds its own runs only.
    filters = dataclasses.replace(ticket, ticket=TicketSpec(criterion="grasp", p=3, structure="filters"))
    assert filters.name == "filters-d76cc2b6673c"


def test_scientific_notation_is_a_number_in_overrides_and_presets(tmp_path):
    settings = load_settings("quickstart", ["train.lr=1e-3", "train.weight_decay=5e-4", "xi=2.5E-1"])
    assert (settings.train.lr, settings.train.weight_decay, settings.xi) == (0.001, 0.0005, 0.25)
    preset = tmp_path / "sci.yaml"
    preset.write_text("train:\n  lr: 1e-3\n  milestones: [5e-1]\n")  # YAML 1.1 reads both as text
    settings = load_settings(preset)
    assert settings.train.lr == 0.001 and settings.train.milestones == (0.5,)


def test_presets_that_are_not_a_mapping_of_utf8_text(tmp_path):
    for name, content, message in [
        ("list.yaml", b"- a\n- b\n", "not a list"),
        ("scalar.yaml", b"3\n", "(a mapping), not 3"),
        ("latin.yaml", b"name: caf\xe9\n", "is not UTF-8 text"),
    ]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_settings(tmp_path / name, ["train.epochs=1"])


def test_settings_built_in_python_get_the_same_checks():
    bad = dataclasses.replace(ExperimentSettings(), train=TrainSettings(lr=float("nan")))
    with pytest.raises(ConfigError, match="train.lr must be a finite number"):
        bad.validate()
    with pytest.raises(ConfigError, match=re.escape("seeds[0] must be a whole number, not True")):
        dataclasses.replace(ExperimentSettings(), seeds=(True,)).validate()


def test_seed_and_margin_checks_shared_with_the_command_line():
    assert check_seed(0) == 0 and check_seed(2**32 - 1) == 2**32 - 1
    for seed in (-1, 2**32, 1.0, True):
        with pytest.raises(ConfigError, match="--seed must be a whole number"):
            check_seed(seed, "--seed")
    assert check_margin(0) == 0.0 and check_margin(0.5) == 0.5
    for xi in (-0.1, math.nan, math.inf):
        with pytest.raises(ConfigError, match="--xi must be a finite number >= 0"):
            check_margin(xi, "--xi")
