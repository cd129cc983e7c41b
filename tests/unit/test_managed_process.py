"""ManagedProcess (consumer/devtools/processes.py): a start that loses a port race is tried again;
any other early exit is reported at once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from consumer.devtools.processes import START_TRIES, ManagedProcess

# Fails like a binary whose port was taken until `fails` starts have happened, then runs.
SCRIPT = """
import pathlib, sys, time
count = pathlib.Path(sys.argv[1])
done = int(count.read_text()) if count.exists() else 0
count.write_text(str(done + 1))
if done < int(sys.argv[2]):
    print(sys.argv[3], flush=True)
    sys.exit(255)
pathlib.Path(sys.argv[4]).write_text("ready")
time.sleep(30)
"""


class Flaky(ManagedProcess):
    name = "flaky"
    binary_name = "python"

    def __init__(self, data_dir: Path, fails: int, message: str) -> None:
        super().__init__(data_dir)
        self.fails, self.message = fails, message

    @property
    def address(self) -> str:
        return "nowhere"

    @property
    def starts(self) -> int:
        return int((self.data_dir / "count").read_text())

    def _command(self) -> list[str]:
        ready = self.data_dir / "ready"
        count = str(self.data_dir / "count")
        return [sys.executable, "-c", SCRIPT, count, str(self.fails), self.message, str(ready)]

    def _is_ready(self) -> bool:
        return (self.data_dir / "ready").exists()


def test_a_start_that_lost_a_port_race_is_tried_again(tmp_path: Path) -> None:
    message = "listen tcp 127.0.0.1:50585: bind: address already in use"
    with Flaky(tmp_path, START_TRIES - 1, message) as process:
        assert process.starts == START_TRIES


def test_tries_are_bounded(tmp_path: Path) -> None:
    process = Flaky(tmp_path, START_TRIES, "bind: Address already in use")
    with pytest.raises(RuntimeError, match="flaky exited with 255"):
        process.start(timeout=10)
    assert process.starts == START_TRIES


def test_any_other_early_exit_is_reported_at_once(tmp_path: Path) -> None:
    process = Flaky(tmp_path, 1, "no such bucket")
    with pytest.raises(RuntimeError, match="flaky exited with 255"):
        process.start(timeout=10)
    assert process.starts == 1
