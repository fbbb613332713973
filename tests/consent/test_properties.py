"""Properties: the consent state machine against the real service and database, and the
parsers the feed and the artefact rely on."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from pydantic import TypeAdapter, ValidationError

from consent import sse, store
from consent.artefact import ConsentRequest, Pointer, ServiceGrant
from consent.history import MerkleConsentLog
from consent.lifecycle import FINAL, TRANSITIONS, Action, IllegalTransitionError, Status, transition
from consent.rules import ConsentDenied, DecisionQuery, DenyReason
from consent.service import ConsentService
from core.db import create_engine, sessions, transaction, utcnow
from core.errors import ConflictError
from core.ids import ClientId
from registry.globalconf_client import GlobalConfClient
from tests.consent.conftest import (
    CITIZEN,
    PSEUDONYMS,
    PURPOSE,
    schema_fields,
    seed_federation,
)
from tests.registry.federation import LMC_TAX, PERSON

T = TypeVar("T")
NADRA_MEMBER = ClientId("PK", "FED", "NADRA")
LMC_MEMBER = ClientId("PK", "LG", "LMC")
CITIZEN_ACTIONS = [Action.APPROVE, Action.REJECT, Action.PAUSE, Action.RESUME, Action.REVOKE]
STATE_REASONS = {
    Status.PENDING: DenyReason.PENDING,
    Status.REJECTED: DenyReason.REJECTED,
    Status.PAUSED: DenyReason.PAUSED,
    Status.REVOKED: DenyReason.REVOKED,
    Status.EXPIRED: DenyReason.EXPIRED,
}


@given(st.lists(st.sampled_from(list(Action)), max_size=30))
def test_the_transition_table_never_leaves_a_final_state(actions: list[Action]) -> None:
    status = Status.PENDING
    for action in actions:
        if (status, action) not in TRANSITIONS:
            with pytest.raises(IllegalTransitionError) as refused:
                transition(status, action)
            assert refused.value.status == 409
            continue
        after = transition(status, action)
        assert status not in FINAL
        assert after == TRANSITIONS[(status, action)]
        status = after


class Model:
    """What a consent should be, kept beside the database's answer."""

    def __init__(self, expires_at: dt.datetime, limit: int | None) -> None:
        self.status = Status.PENDING
        self.expires_at = expires_at
        self.limit = limit
        self.uses = 0


class ConsentMachine(RuleBasedStateMachine):
    """Random sequences of requests, citizen actions, passing time, sweeps and decisions."""

    consents = Bundle("consents")

    def __init__(self, template: Path, folder: Path, conf: GlobalConfClient) -> None:
        super().__init__()
        path = folder / f"machine-{uuid.uuid4().hex}.db"
        shutil.copyfile(template, path)
        self.loop = asyncio.new_event_loop()
        self.engine = create_engine(f"sqlite:///{path}", pool_size=2)
        self.now = utcnow()
        self.service = ConsentService(
            sessions=sessions(self.engine),
            log=MerkleConsentLog(),
            pseudonymize=PSEUDONYMS,
            conf=conf.current,
            fields=schema_fields(sessions(self.engine)),
            clock=lambda: self.now,
        )
        self.models: dict[str, Model] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.engine.dispose())
        self.loop.close()

    @initialize()
    def log(self) -> None:
        self.run(MerkleConsentLog().create(self.service.sessions))

    @rule(
        target=consents,
        days=st.integers(min_value=1, max_value=4),
        limit=st.none() | st.integers(min_value=1, max_value=3),
    )
    def request(self, days: int, limit: int | None) -> str:
        expires = self.now + dt.timedelta(days=days)
        body = ConsentRequest(
            subject=CITIZEN,
            consumer=LMC_TAX,
            services=[ServiceGrant(service=PERSON, fields=["/name"])],
            purpose=PURPOSE,
            valid_from=self.now,
            expires_at=expires,
            use_limit=limit,
        )
        view = self.run(self.service.request(LMC_MEMBER, body))
        self.models[view.id] = Model(view.expires_at, limit)
        return view.id

    @rule(cid=consents, data=st.data())
    def act(self, cid: str, data: st.DataObject) -> None:
        model = self.models[cid]
        # Mostly an action that applies, so sequences get deep; sometimes any action at all.
        legal = [a for a in CITIZEN_ACTIONS if (model.status, a) in TRANSITIONS]
        choices = legal if legal and data.draw(st.integers(0, 3)) else CITIZEN_ACTIONS
        action = data.draw(st.sampled_from(choices))
        expected = TRANSITIONS.get((model.status, action))
        if action is Action.APPROVE and self.now >= model.expires_at:
            expected = None  # an expired request can no longer be approved
        try:
            view = self.run(self.service.citizen_act(CITIZEN, cid, action))
        except ConflictError:
            assert expected is None, (model.status, action)
            return
        assert expected is not None, (model.status, action)
        assert view.status == expected
        model.status = expected

    @rule(hours=st.integers(min_value=1, max_value=30))
    def time_passes(self, hours: int) -> None:
        self.now += dt.timedelta(hours=hours)

    @rule()
    def sweep(self) -> None:
        self.run(self.service.sweep())
        for model in self.models.values():
            live = model.status in (Status.PENDING, Status.ACTIVE, Status.PAUSED)
            if live and self.now >= model.expires_at:
                model.status = Status.EXPIRED

    @rule(cid=consents)
    def decide(self, cid: str) -> None:
        model = self.models[cid]
        query = DecisionQuery(cid, CITIZEN, LMC_TAX, PERSON, PURPOSE, self.now)
        reason: DenyReason | None = None
        try:
            self.run(self.service.decide(NADRA_MEMBER, query))
        except ConsentDenied as e:
            reason = e.reason
        if reason is not None:
            if model.status in STATE_REASONS:
                assert reason is STATE_REASONS[model.status]
            elif self.now >= model.expires_at:
                assert reason is DenyReason.EXPIRED
                model.status = Status.EXPIRED  # recorded at decision time
            else:
                assert model.limit is not None
                assert model.uses >= model.limit
                assert reason is DenyReason.USE_LIMIT_REACHED
            return
        # A permit: only ever for an active consent within its time and its uses.
        assert model.status is Status.ACTIVE
        assert self.now < model.expires_at
        if model.limit is not None:
            assert model.uses < model.limit
            model.uses += 1

    @invariant()
    def the_database_agrees(self) -> None:
        if not self.models:
            return

        async def statuses() -> dict[str, tuple[str, int]]:
            async with transaction(self.service.sessions, write=False) as s:
                rows = [await store.consent(s, cid) for cid in self.models]
                return {r.id: (r.status, r.uses) for r in rows if r is not None}

        found = self.run(statuses())
        for cid, model in self.models.items():
            assert found[cid] == (model.status.value, model.uses)


def test_no_sequence_reaches_an_illegal_state_or_permits_when_it_must_not(
    sqlite_template: Path, tmp_path: Path
) -> None:
    template = tmp_path / "seeded.db"
    shutil.copyfile(sqlite_template, template)

    async def seeded() -> GlobalConfClient:
        engine = create_engine(f"sqlite:///{template}")
        try:
            return await seed_federation(sessions(engine))
        finally:
            await engine.dispose()

    conf = asyncio.run(seeded())
    run_state_machine_as_test(
        lambda: ConsentMachine(template, tmp_path, conf),
        settings=settings(max_examples=40, stateful_step_count=30, deadline=None),
    )


# --- parsers ------------------------------------------------------------------------------------

_values = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)),
    max_size=80,
)


@given(
    event=st.from_regex(r"[a-z][a-z-]{0,15}", fullmatch=True),
    data=_values,
    ident=st.none() | st.from_regex(r"[0-9]{1,12}", fullmatch=True),
)
def test_event_stream_messages_parse_back(event: str, data: str, ident: str | None) -> None:
    message = sse.Message(event, data, ident)
    parser = sse.Parser()
    got = [parser.line(line) for line in sse.encode(message).decode("utf-8").split("\n")[:-1]]
    assert got[:-1] == [None] * (len(got) - 1)
    assert got[-1] == message


@given(st.text(max_size=40))
def test_line_breaks_never_enter_an_event_stream(value: str) -> None:
    if any(c in value for c in "\r\n\x00"):
        with pytest.raises(ValueError, match="line breaks"):
            sse.encode(sse.Message("event", value))
    else:
        assert sse.encode(sse.Message("event", value)).count(b"\n\n") == 1


_pointer = TypeAdapter(Pointer)
_token = st.text(
    alphabet=st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), min_size=1
).filter(lambda t: t != "-")


@given(st.lists(_token, min_size=1, max_size=5))
def test_escaped_pointers_are_accepted(tokens: list[str]) -> None:
    text = "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)
    if len(text) <= 512:
        assert _pointer.validate_python(text) == text


@pytest.mark.parametrize("bad", ["", "name", "/", "/a//b", "/a/-", "/~2", "/a~", "/x\x01"])
def test_malformed_pointers_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        _pointer.validate_python(bad)
