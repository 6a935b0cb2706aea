"""The one `--wait` check: the same message and code for every command that waits."""

from __future__ import annotations

import math

import pytest

from drasill_cli.errors import InvalidInput
from drasill_cli.waiting import check_wait


@pytest.mark.parametrize("seconds", [0.0, 0.5, 30.0, math.inf])
def test_zero_or_more_seconds_and_inf_pass(seconds: float) -> None:
    check_wait(seconds, "until granted")


@pytest.mark.parametrize("seconds", [-1.0, -0.001, math.nan, -math.inf])
def test_negative_and_nan_are_refused_with_the_fix(seconds: float) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_wait(seconds, "until mail arrives")
    assert caught.value.code == "invalid-wait"
    assert caught.value.message == (
        f"--wait must be zero or more seconds (inf: until mail arrives), got {seconds}"
    )


def test_without_an_until_the_message_has_no_inf_hint() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_wait(-2.0)
    assert caught.value.message == "--wait must be zero or more seconds, got -2.0"
