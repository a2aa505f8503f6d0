"""result.json and settings.json as the reports read them: one check, a DataError naming the file."""

from __future__ import annotations

import math

import pytest
from _runfiles_helpers import fresh_runs, read_json, run_folder, write_json

import layerlottery as ll
from layerlottery.reports import collect_runs
from layerlottery.reports.results import RESULT_FIELDS, read_result_file, result_identity, result_problem

TICKET = {
    "name": "ticket-0123", "label": "snip p=1 seed 3", "kind": "ticket", "seed": 3, "criterion": "snip", "p": 1,
    "removed": ["layer3.2"], "test_acc": 0.5, "train_seconds": 1.5, "macs": 1000, "params": 100,
    "emissions_kg": None, "energy_measured": None,
}
TICKET_SETTINGS = {"seed": 3, "ticket": {"criterion": "snip", "p": 1}, "lottery": None}


@pytest.mark.parametrize(
    "change,fragment",
    [
        ({"test_acc": None}, "test_acc is null, not a number from 0 to 1"),
        ({"test_acc": 1.5}, "test_acc is 1.5, not a number from 0 to 1"),
        ({"test_acc": math.nan}, "test_acc is NaN"),
        ({"test_acc": True}, "test_acc is true"),
        ({"seed": "3"}, 'seed is "3", not a whole number'),
        ({"seed": 3.0}, "seed is 3.0, not a whole number"),
        ({"p": -1, "removed": []}, "p is -1, not a whole number >= 0"),
        ({"removed": "layer3.2"}, 'removed is "layer3.2", not a list of block names'),
        ({"removed": []}, "p is 1 but 0 removed block(s) are listed"),
        ({"train_seconds": 0}, "train_seconds is 0, not a number of seconds > 0"),
        ({"macs": 10.5}, "macs is 10.5, not a whole number > 0"),
        ({"params": None}, "params is null"),
        ({"kind": ""}, 'kind is "", not a run kind'),
        ({"emissions_kg": -1.0}, "emissions_kg is -1.0, not null or a number >= 0"),
        ({"energy_measured": "yes"}, 'energy_measured is "yes", not null, true or false'),
        ({"criterion": "grasp"}, 'criterion is "grasp", but the run\'s settings say "snip"'),
        ({"seed": 4}, "seed is 4, but the run's settings say 3"),
        ({"kind": "dense"}, 'kind is "dense", but the run\'s settings say "ticket"'),
    ],
)
def test_each_wrong_field_is_named(change, fragment):
    assert result_problem(TICKET, TICKET_SETTINGS) == ""
    assert fragment in result_problem({**TICKET, **change}, TICKET_SETTINGS)


@pytest.mark.parametrize("name", list(RESULT_FIELDS))
def test_each_required_field_is_required(name):
    data = {k: v for k, v in TICKET.items() if k != name}
    assert result_problem(data) == f"{name} missing"


def test_identity_follows_the_kind_of_run():
    assert result_identity({"seed": 0, "ticket": None}) == {"kind": "dense", "seed": 0, "criterion": None, "p": 0}
    lottery = {"seed": 1, "ticket": {"criterion": "magnitude", "p": 2}, "lottery": {"round": 1}}
    assert result_identity(lottery) == {"kind": "lottery", "seed": 1, "criterion": "magnitude", "p": 2}
    assert result_identity(TICKET_SETTINGS)["kind"] == "ticket"


@pytest.mark.parametrize("text,fragment", [("[]", "(a JSON list, not an object of results)"), ("null", "(a JSON null"), ("{", "is unreadable"), ("{}", "(kind, seed,")])
def test_read_result_file_names_the_file_and_the_remedy(tmp_path, text, fragment):
    path = tmp_path / "result.json"
    path.write_text(text)
    with pytest.raises(ll.DataError) as caught:
        read_result_file(path, hint="do this")
    assert str(caught.value).startswith(str(path)) and fragment in str(caught.value)
    assert str(caught.value).endswith("; do this")
    path.write_bytes(b"\xff\xfe")  # not UTF-8
    with pytest.raises(ll.DataError, match="is unreadable"):
        read_result_file(path)


def test_collect_runs_groups_valid_runs_and_refuses_a_broken_settings_file(tmp_path_factory, tmp_path):
    runs = fresh_runs(tmp_path_factory, tmp_path / "runs")
    [(name, results)] = collect_runs(runs).items()
    assert name.startswith("test_resnet on synthetic, 1 epochs") and sorted(r["kind"] for r in results) == ["dense", "ticket"]

    settings = run_folder(runs, "ticket") / "settings.json"
    record = read_json(settings)
    for broken, fragment in [
        ({**record, "hashed": None}, "(hashed is missing or not an object)"),
        ({**record, "settings": {**record["settings"], "train": {}}}, "(settings.train.epochs is missing)"),
        ({**record, "settings": {**record["settings"], "ticket": "snip"}}, "(settings.ticket is neither null nor an object"),
        ({**record, "settings": {**record["settings"], "seed": 7}}, "seed is 0, but the run's settings say 7"),
    ]:
        write_json(settings, broken)
        with pytest.raises(ll.DataError) as caught:
            collect_runs(runs)
        assert fragment in str(caught.value) and str(run_folder(runs, "ticket")) in str(caught.value)
    settings.unlink()
    with pytest.raises(ll.DataError, match="settings.json is unreadable"):
        collect_runs(runs)
