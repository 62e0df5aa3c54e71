"""Every slatrack command runs with the collector's thresholds of services.runtime."""

import gc
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from services.cli.commands import main
from services.runtime import GC_THRESHOLDS


@pytest.fixture
def default_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_a_command_sets_the_collector_thresholds(default_thresholds: None) -> None:
    result = CliRunner().invoke(main, ["schema", "--help"])
    assert result.exit_code == 0, result.output
    assert gc.get_threshold() == GC_THRESHOLDS


def test_the_thresholds_collect_less_often_than_the_default() -> None:
    young, middle, full = GC_THRESHOLDS
    assert young > 700 and middle >= 10 and full >= 10
