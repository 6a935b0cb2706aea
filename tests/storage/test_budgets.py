"""Contract: `BudgetBook` (who is warned or paused by hardware enforcement), on every backend."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

from drasill_cli.storage import Backend
from tests.harness import Harness

OVER = [{"resource": "ram", "declared_gb": 1.0, "measured_gb": 1.5}]


def test_an_empty_book(backend: Backend) -> None:
    book = backend.budgets
    assert book.paused() == []
    assert book.warned("alpha") is None
    assert book.resume("alpha") == []
    book.forget_warning("alpha")  # nothing to forget is no error


def test_warn_then_forget(backend: Backend) -> None:
    book = backend.budgets
    book.warn("alpha", {"ram": 1.0})
    assert book.warned("alpha") == {"ram": 1.0}
    assert book.warned("beta") is None
    book.warn("alpha", {"ram": 2.0, "vram": 4.0})  # a new overrun replaces the old
    assert book.warned("alpha") == {"ram": 2.0, "vram": 4.0}
    book.forget_warning("alpha")
    assert book.warned("alpha") is None


def test_pause_then_resume(backend: Backend) -> None:
    book = backend.budgets
    book.pause("beta", [(4321, 1700000000.25), (4322, 1700000001.5)], OVER)
    book.pause("alpha", [], OVER)
    assert book.paused() == ["alpha", "beta"]
    assert book.resume("beta") == [(4321, 1700000000.25), (4322, 1700000001.5)]
    assert book.paused() == ["alpha"]
    assert book.resume("beta") == []  # resumed once only
    assert book.resume("alpha") == []
    assert book.paused() == []


def test_a_warning_and_a_pause_are_apart(backend: Backend) -> None:
    book = backend.budgets
    book.warn("alpha", {"ram": 1.0})
    book.pause("alpha", [(10, 1.0)], OVER)
    assert book.resume("alpha") == [(10, 1.0)]
    assert book.warned("alpha") == {"ram": 1.0}


def test_a_damaged_pause_is_never_returned(backend: Backend, harness: Harness) -> None:
    harness.plant_damaged_pause(backend, "alpha")  # what no interface may store
    assert backend.budgets.resume("alpha") == []
    assert backend.budgets.paused() == []
    assert any("quarantined" in warning for warning in backend.warnings)


@pytest.mark.parametrize("guard", ["admitting", "enforcing"])
def test_the_guards_exclude_each_other_s_holders(backend: Backend, guard: str) -> None:
    enter: Callable[[], AbstractContextManager[None]] = getattr(backend.budgets, guard)
    inside, most = 0, 0
    count = threading.Lock()

    def worker() -> None:
        nonlocal inside, most
        for _ in range(5):
            with enter():
                with count:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.002)
                with count:
                    inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 1
