"""The rules every backend applies to a stored record have one definition (`models`), and the
plain checks of the hot path agree with the pydantic models of import/export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import drasill_cli
from drasill_cli import clock, models
from drasill_cli.models import RecordError

NOW = clock.iso()
PACKAGE = Path(drasill_cli.__file__).parent


def test_a_stored_agent_must_be_an_agent_record_of_its_own_name() -> None:
    raw = {"name": "alice", "host": "h", "registered_at": NOW}
    assert models.stored_agent("alice", raw).name == "alice"
    with pytest.raises(RecordError, match="holds agent 'alice', not 'bob'"):
        models.stored_agent("bob", raw)
    with pytest.raises(RecordError, match="is not an agent record: it lacks host"):
        models.stored_agent("alice", {"name": "alice", "registered_at": NOW})


def test_a_stored_task_must_hold_its_own_id() -> None:
    raw = {"id": "t-0001", "title": "x", "state": "queued", "created_at": NOW, "updated_at": NOW}
    assert models.stored_task("t-0001", raw).id == "t-0001"
    with pytest.raises(RecordError, match="holds task 't-0001', not 't-0002'"):
        models.stored_task("t-0002", raw)


@pytest.mark.parametrize("said", ["holds agent ", "holds task ", "is not an agent record"])
def test_no_backend_carries_its_own_copy_of_the_record_checks(said: str) -> None:
    copies = [
        str(path.relative_to(PACKAGE))
        for path in sorted((PACKAGE / "backends").rglob("*.py"))
        if said in path.read_text(encoding="utf-8")
    ]
    assert copies == [], f"{said!r} is checked outside models.py: {copies}"


def test_one_builder_makes_the_message_items_of_every_backend() -> None:
    from drasill_cli.storage.transfer import message_items

    sent = {"id": "m-2", "to": "bob", "via": "sent"}
    copy = {"id": "m-2", "to": "bob", "via": "inbox"}
    only_sent = {"id": "m-1", "to": "carol"}
    items = list(message_items([("sent", sent), ("read", copy), ("sent", only_sent)]))
    assert items == [
        {"kind": "message", "message": only_sent, "state": None, "sent": True},
        {"kind": "message", "message": copy, "state": "read", "sent": True},
    ]
    copies = [
        str(path.relative_to(PACKAGE))
        for path in sorted((PACKAGE / "backends").rglob("*.py"))
        if '"kind": "message"' in path.read_text(encoding="utf-8")
    ]
    assert copies == [], f"message items built outside storage.transfer: {copies}"


# ---- the plain checks and the pydantic models agree (one definition of the rules) ------------

RECORDS: list[type[models.Record]] = [
    models.AgentRecord,
    models.Task,
    models.MessageRecord,
    models.LockRecord,
    models.WakeRecord,
]
_SHA = "0" * 64
_DEEP: list[Any] = []
for _ in range(20):
    _DEEP = [_DEEP]
_INTERESTING = st.sampled_from(
    [
        None,
        True,
        10**400,
        -1,
        0,
        1,
        0.5,
        -0.5,
        float("inf"),
        "",
        "alice",
        "all",
        "Bob",
        "-x",
        NOW,
        "2026-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "soon",
        "x\ud800",
        "\udfff",
        "a\x00b",
        "t-0001",
        *models.TASK_STATES,
        *models.PRIORITIES,
        *models.LOCK_MODES,
        *models.SUPERVISORS,
        *models.WAKE_STATES,
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    _INTERESTING,
)
_VALUES = st.one_of(
    _INTERESTING,
    _INTERESTING,
    _INTERESTING,
    _SCALARS,
    st.lists(_SCALARS, max_size=3),
    st.lists(
        st.fixed_dictionaries(
            {"name": st.sampled_from(["a.txt", "x\ud800", 3]), "sha256": st.just(_SHA)},
            optional={
                "size": st.sampled_from([0, 5, True, "5", None]),
                "path": st.sampled_from(["/tmp/a", None, 1]),
                "note": _SCALARS,
            },
        ),
        max_size=2,
    ),
    st.dictionaries(st.text(max_size=3), _SCALARS, max_size=2),
    st.sampled_from([_DEEP, {"a": float("nan")}, ["\ud800"], [[[[[]]]]]]),
)
# Values close to what each kind of key takes (the edges of its rule).
_NEAR: dict[str, list[Any]] = {
    "name": ["alice", "all", "Bob", "-x", "a" * 64, "a" * 65, "x\ud800", ""],
    "time": [NOW, "2026-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "soon", "x" * 65, "2026-13-01"],
    "str": ["", "x", "x\ud800", "a\x00b"],
    "int": [0, 1, -1, True, 1.0, 10**400, 2**63],
    "float": [0, 0.5, -0.5, -1, True, float("inf"), float("nan"), 10**400, "1"],
    "bool": [True, False, 0, 1, "true"],
    "choice": ["", "other", 1, None],
    "strs": [[], ["a"], ["a", 1], ["\ud800"], "a"],
}
_VALID: dict[type[models.Record], dict[str, Any]] = {
    models.AgentRecord: {"name": "alice", "host": "h", "registered_at": NOW},
    models.Task: {
        "id": "t-0001",
        "title": "x",
        "state": "queued",
        "created_at": NOW,
        "updated_at": NOW,
    },
    models.MessageRecord: {
        "id": "m-1",
        "from": "alice",
        "to": "bob",
        "body": "hi",
        "priority": "normal",
        "created_at": NOW,
    },
    models.LockRecord: {
        "path": "/a",
        "mode": "write",
        "holder": "alice",
        "ttl": 60,
        "acquired_at": NOW,
        "expires_at": NOW,
    },
    models.WakeRecord: {},
}


@st.composite
def _records(draw: st.DrawFn) -> tuple[type[models.Record], dict[str, Any]]:
    kind = draw(st.sampled_from(RECORDS))
    keys = st.sampled_from([*kind.rules(), "extra", "note"])
    # Mostly a valid record with one or two keys changed: the rules are then what decides.
    raw = dict(_VALID[kind]) if draw(st.integers(0, 4)) else {}
    for key in draw(st.lists(keys, min_size=1, max_size=2)):
        rule = kind.rules().get(key)
        near = _NEAR.get(rule.kind, []) + list(rule.choices) if rule is not None else []
        raw[key] = draw(st.one_of(st.sampled_from(near), _VALUES) if near else _VALUES)
    if raw and not draw(st.integers(0, 9)):
        raw.pop(draw(st.sampled_from(sorted(raw))))
    return kind, raw


def _plain_accepts(kind: type[models.Record], raw: dict[str, Any]) -> bool:
    try:
        kind.check(raw)
    except RecordError:
        return False
    return True


def _pydantic_accepts(kind: type[models.Record], raw: dict[str, Any]) -> bool:
    from drasill_cli.recordmodels import ValidationError, model_of

    try:
        model_of(kind).model_validate(raw)
    except ValidationError:
        return False
    return True


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_records())
def test_the_plain_checks_and_the_pydantic_models_agree(
    case: tuple[type[models.Record], dict[str, Any]],
) -> None:
    kind, raw = case
    assert _plain_accepts(kind, raw) == _pydantic_accepts(kind, raw), (kind.__name__, raw)


@pytest.mark.parametrize("kind", RECORDS, ids=lambda kind: kind.__name__)
def test_a_valid_record_passes_both(kind: type[models.Record]) -> None:
    assert _plain_accepts(kind, _VALID[kind]) and _pydantic_accepts(kind, _VALID[kind])


def test_a_number_too_large_for_a_float_is_refused_not_a_crash() -> None:
    raw = {**_VALID[models.AgentRecord], "ram_gb": 10**400}
    with pytest.raises(RecordError, match="ram_gb"):
        models.AgentRecord.check(raw)


def test_only_import_reaches_the_pydantic_record_models() -> None:
    from tests.test_architecture import import_graph

    pydantic_modules = {"drasill_cli.recordmodels", "drasill_cli.storage.transfer_items"}
    users = {
        module
        for module, imported in import_graph().items()
        if imported & pydantic_modules and module not in pydantic_modules
    }
    assert users == {"drasill_cli.transfer"}, users


def test_the_page_takes_agent_names_by_the_name_rule() -> None:
    from drasill_cli.names import AGENT_NAME_MAX, AGENT_NAME_RE
    from drasill_cli.web import payloads

    longest = "a" * AGENT_NAME_MAX
    assert AGENT_NAME_RE.fullmatch(longest) and not AGENT_NAME_RE.fullmatch(longest + "a")
    assert payloads.parse(payloads.Send, b'{"to": "%s", "body": "x"}' % longest.encode())
    with pytest.raises(payloads.Invalid, match="to"):
        payloads.parse(payloads.Send, b'{"to": "%s", "body": "x"}' % (longest + "a").encode())
    with pytest.raises(payloads.Invalid, match="JSON"):
        payloads.parse(payloads.Send, b'{"to": "bob", "body": "\\ud800"}')
