"""Progress in a log file is one full line per epoch; on a terminal it is rich's live bar."""

from __future__ import annotations

import io
import re

from layerlottery.training.progress import TrainProgress

LINE = re.compile(
    r"epoch (\d+)/3  loss 0\.5000  acc 75\.00%  1,234 img/s(  test 80\.00%)?  elapsed \d+:\d\d  ETA \d+:\d\d"
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_epochs(bar: TrainProgress, first: int, last: int) -> None:
    with bar:
        for epoch in range(first, last + 1):
            bar.start_epoch(epoch)
            for _ in range(2):
                bar.advance()
                assert not bar.due() or isinstance(bar._stream, Terminal)
            bar.show(0.5, 0.75, 1234.0, 0.8 if epoch == last else None)


def test_a_log_file_gets_one_line_per_epoch() -> None:
    log = io.StringIO()
    run_epochs(TrainProgress(True, 3, steps_per_epoch=2, stream=log), 1, 3)
    lines = log.getvalue().splitlines()
    matches = [LINE.fullmatch(line) for line in lines]
    assert all(matches) and [int(m.group(1)) for m in matches] == [1, 2, 3], lines
    assert "test 80.00%" in lines[-1] and "test" not in lines[0]


def test_a_resumed_run_counts_from_its_checkpoint() -> None:
    log = io.StringIO()
    run_epochs(TrainProgress(True, 3, steps_per_epoch=2, start_epoch=1, stream=log), 2, 3)
    assert [line.split()[1] for line in log.getvalue().splitlines()] == ["2/3", "3/3"]


def test_a_terminal_gets_the_bar_and_disabled_writes_nothing() -> None:
    screen = Terminal()
    run_epochs(TrainProgress(True, 3, steps_per_epoch=2, stream=screen), 1, 3)
    assert "epoch 3/3" in screen.getvalue() and "\x1b[" in screen.getvalue()  # rich's cursor control
    silent = io.StringIO()
    run_epochs(TrainProgress(False, 3, steps_per_epoch=2, stream=silent), 1, 3)
    assert silent.getvalue() == ""
