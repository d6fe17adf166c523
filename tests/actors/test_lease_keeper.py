"""LeaseKeeper with a scripted renewer (pure trio, virtual time; the SQL is tested in test_leases.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from uuid import UUID, uuid4

import asyncpg
import pytest
import trio
import trio.testing

from actors.leases import LeaseKeeper
from observability.metrics import Metrics
from store.runs import Claim

LEASE_S = 3.0  # renewals every second
MARGIN_S = LEASE_S / 20


def claim(mission_id: str) -> Claim:
    return Claim("u-1", mission_id, "2026-01-01T00:00:00.000Z", uuid4(), 1)


class ScriptedRenewer:
    """Records each call; `answer` decides what it returns or raises."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, frozenset[str]]] = []
        self.answer: Callable[[Sequence[Claim]], set[UUID]] = lambda claims: {c.token for c in claims}

    async def __call__(self, claims: Sequence[Claim], lease_s: float, /) -> set[UUID]:
        assert lease_s == LEASE_S
        self.calls.append((trio.current_time(), frozenset(c.mission_id for c in claims)))
        await trio.sleep(0.01)  # a round trip
        return self.answer(claims)


def failing(exc: Exception, claims: Sequence[Claim]) -> set[UUID]:
    raise exc


def failures(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("mana_ai_lease_renewal_failures_total", {"service": "mana-ai"}) or 0.0


async def running_mission(keeper: LeaseKeeper, held: Claim, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
    """What a MissionRunner does with its claim: run under the keeper's guard."""
    with keeper.guard(held) as scope:
        task_status.started(scope)
        await trio.sleep_forever()


async def test_every_held_claim_is_renewed_in_one_call_per_interval(autojump_clock: trio.testing.MockClock) -> None:
    renewer = ScriptedRenewer()
    keeper = LeaseKeeper(renewer, Metrics(), lease_s=LEASE_S)
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)
        keeper.hold([claim(f"m{i}") for i in range(25)], claimed_at=trio.current_time())
        await trio.sleep(10.5)
        nursery.cancel_scope.cancel()
    assert len(renewer.calls) == 10  # one per second, whatever the number of claims
    assert all(len(missions) == 25 for _, missions in renewer.calls)
    assert keeper.stats().renewals == 10 and keeper.stats().held == 25


async def test_failed_renewals_are_retried_and_runs_go_on_while_the_lease_is_surely_ours(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    renewer, metrics = ScriptedRenewer(), Metrics()
    keeper = LeaseKeeper(renewer, metrics, lease_s=LEASE_S)
    errors = iter([asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
                   ConnectionResetError("connection reset by peer"),
                   asyncpg.InterfaceError("connection is closed"),
                   OSError("network is unreachable")])

    def blip(claims: Sequence[Claim]) -> set[UUID]:
        exc = next(errors, None)
        if exc is not None:
            raise exc
        return {c.token for c in claims}

    m1 = claim("m1")
    with caplog.at_level(logging.WARNING):
        async with trio.open_nursery() as nursery:
            await nursery.start(keeper.run)
            keeper.hold([m1], claimed_at=trio.current_time())
            guard = await nursery.start(running_mission, keeper, m1)
            await trio.sleep(1.5)  # the first renewal succeeded at 1 s
            renewer.answer = blip  # four failures in a row: 0.1 + 0.2 + 0.4 + 0.8 s of backoff
            await trio.sleep(5)
            assert not guard.cancel_called and keeper.holds(m1)
            nursery.cancel_scope.cancel()
    times = [t for t, _ in renewer.calls]
    retry_gaps = [round(b - a - 0.01, 2) for a, b in zip(times[1:], times[2:])][:4]
    assert retry_gaps == [0.1, 0.2, 0.4, 0.8]  # then back to once a second
    assert failures(metrics) == 4 and keeper.stats().lost == 0
    lines = [r for r in caplog.records if r.getMessage() == "lease.renew_failed"]
    assert [r.error.split(":")[0] for r in lines] == [  # type: ignore[attr-defined]
        "InternalClientError", "ConnectionResetError", "InterfaceError", "OSError"]


async def test_claims_are_given_up_only_when_their_lease_may_have_lapsed(autojump_clock: trio.testing.MockClock) -> None:
    renewer, metrics = ScriptedRenewer(), Metrics()
    keeper = LeaseKeeper(renewer, metrics, lease_s=LEASE_S)
    running, queued = claim("running"), claim("queued")
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)
        keeper.hold([running, queued], claimed_at=trio.current_time())
        guard = await nursery.start(running_mission, keeper, running)
        await trio.sleep(1.5)
        last_ok = renewer.calls[-1][0]  # sent at 1 s: the server's expiry is 4 s at the earliest
        renewer.answer = partial(failing, asyncpg.ConnectionDoesNotExistError("connection was closed"))
        with trio.fail_after(10):
            while not guard.cancel_called:
                await trio.sleep(0.001)
        gave_up_at = trio.current_time()
        assert not keeper.holds(queued)  # a queued mission then never starts
        # the keeper lives on: when the database is back, new claims are renewed again
        renewer.answer = ScriptedRenewer().answer
        fresh = claim("fresh")
        keeper.hold([fresh], claimed_at=trio.current_time())
        await trio.sleep(6)
        assert keeper.holds(fresh)
        nursery.cancel_scope.cancel()
    assert last_ok + LEASE_S - MARGIN_S <= gave_up_at < last_ok + LEASE_S
    assert keeper.stats().lost == 2 and failures(metrics) >= 4


async def test_a_claim_that_does_not_come_back_is_lost_unless_its_owner_is_settling(
        autojump_clock: trio.testing.MockClock) -> None:
    renewer = ScriptedRenewer()
    keeper = LeaseKeeper(renewer, Metrics(), lease_s=LEASE_S)
    taken, settling, kept = claim("taken"), claim("settling"), claim("kept")
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)
        keeper.hold([taken, settling, kept], claimed_at=trio.current_time())
        guards = [await nursery.start(running_mission, keeper, c) for c in (taken, settling, kept)]
        keeper.settling(settling)  # e.g. its write-back committed just before the renewal
        renewer.answer = lambda claims: {kept.token}
        await trio.sleep(1.5)
        assert [g.cancel_called for g in guards] == [True, False, False]
        assert [keeper.holds(c) for c in (taken, settling, kept)] == [False, False, True]
        assert keeper.guard(taken).cancel_called  # a run starting now is cancelled at once
        nursery.cancel_scope.cancel()
    assert keeper.stats().lost == 1


async def test_a_hanging_renewal_times_out_and_counts_as_a_failure(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()

    async def hang(claims: Sequence[Claim], lease_s: float, /) -> set[UUID]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    keeper = LeaseKeeper(hang, metrics, lease_s=LEASE_S)
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)
        keeper.hold([claim("m1")], claimed_at=trio.current_time())
        await trio.sleep(2.5)  # the first renewal starts at 1 s and is cut after another second
        nursery.cancel_scope.cancel()
    assert failures(metrics) == 1


async def test_close_keeps_renewing_until_the_last_claim_is_let_go(autojump_clock: trio.testing.MockClock) -> None:
    renewer = ScriptedRenewer()
    keeper = LeaseKeeper(renewer, Metrics(), lease_s=LEASE_S)
    m1 = claim("m1")
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)
        keeper.hold([m1], claimed_at=trio.current_time())
        keeper.close()  # shutdown: m1 is still being handed back
        await trio.sleep(2.5)
        assert len(renewer.calls) == 2
        keeper.let_go(m1)
        await trio.testing.wait_all_tasks_blocked()
        assert not nursery.child_tasks  # run() returned
