"""upstream/fair_slots.py: the fair order of LLM slot waiters (pure) and its trio shell."""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from upstream.fair_slots import FairQueue, FairSlots, SlotKey, Ticket


def drain(queue: FairQueue) -> list[SlotKey]:
    order = []
    while (ticket := queue.pop()) is not None:
        order.append(ticket.key)
    return order


def test_users_take_turns_and_a_light_user_is_next_after_one_heavy_grant() -> None:
    queue = FairQueue()
    for agent in ("a1", "a2", "a3"):
        for n in range(3):
            queue.push(SlotKey("heavy", agent, f"2026-01-01T00:0{n}:00Z"))
    queue.push(SlotKey("light-1", "l1", "2026-01-01T09:00:00Z"))
    queue.push(SlotKey("light-2", "l2", "2026-01-01T09:00:00Z"))
    assert (queue.waiting, queue.users_waiting) == (11, 3)
    users = [key.user for key in drain(queue)]
    assert users[:3] == ["heavy", "light-1", "light-2"]
    assert users[3:] == ["heavy"] * 8
    assert (queue.waiting, queue.users_waiting) == (0, 0)


def test_within_a_user_agents_take_turns_and_within_an_agent_the_earliest_due_goes_first() -> None:
    queue = FairQueue()
    queue.push(SlotKey("u", "a", "2026-01-01T00:03:00Z"))
    queue.push(SlotKey("u", "a", "2026-01-01T00:01:00Z"))
    queue.push(SlotKey("u", "a", "2026-01-01T00:02:00Z"))
    queue.push(SlotKey("u", "b", "2026-01-01T00:09:00Z"))
    assert [(k.agent, k.due[14:16]) for k in drain(queue)] == [("a", "01"), ("b", "09"), ("a", "02"), ("a", "03")]


def test_a_user_served_just_now_goes_behind_those_waiting() -> None:
    queue = FairQueue()
    queue.push(SlotKey("x"))
    queue.push(SlotKey("y"))
    assert queue.pop() is not None  # x
    queue.push(SlotKey("x"))  # x returns: y has waited longer since its last grant
    assert [k.user for k in drain(queue)] == ["y", "x"]


def test_cancelled_tickets_leave_the_queue() -> None:
    queue = FairQueue()
    a, b, c = queue.push(SlotKey("a")), queue.push(SlotKey("b")), queue.push(SlotKey("c"))
    queue.cancel(b)
    queue.cancel(b)  # twice is once
    assert (queue.waiting, queue.users_waiting) == (2, 2)
    assert [k.user for k in drain(queue)] == ["a", "c"]
    assert a.granted and c.granted and not b.granted
    queue.cancel(a)  # granted: nothing to take out
    assert queue.waiting == 0 and queue.pop() is None
    # a user whose only tickets were cancelled is skipped, and can come back
    lone = queue.push(SlotKey("d", "d1"))
    queue.cancel(lone)
    queue.push(SlotKey("e"))
    queue.push(SlotKey("d", "d1"))
    assert [k.user for k in drain(queue)] == ["d", "e"]


_step = st.one_of(st.tuples(st.just("push"), st.integers(0, 6), st.integers(0, 3), st.integers(0, 9)),
                  st.tuples(st.just("pop"), st.just(0), st.just(0), st.just(0)),
                  st.tuples(st.just("cancel"), st.integers(0, 1000), st.just(0), st.just(0)))


@settings(max_examples=300, deadline=None)
@given(st.lists(_step, max_size=120))
def test_a_user_that_starts_waiting_is_behind_at_most_one_grant_of_each_other_user(
        steps: list[tuple[str, int, int, int]]) -> None:
    queue = FairQueue()
    waiting: list[Ticket] = []
    behind: dict[str, dict[str, int]] = {}  # a user waiting since it had nothing waiting → grants to others since
    for op, a, b, c in [*steps, *[("pop", 0, 0, 0)] * 200]:
        if op == "push":
            user = f"u{a}"
            if not any(t.key.user == user for t in waiting):
                behind[user] = {}
            waiting.append(queue.push(SlotKey(user, f"a{b}", f"2026-01-01T00:0{c}:00Z")))
        elif op == "cancel" and waiting:
            ticket = waiting.pop(a % len(waiting))
            queue.cancel(ticket)
            if not any(t.key.user == ticket.key.user for t in waiting):
                behind.pop(ticket.key.user, None)
        elif op == "pop":
            got = queue.pop()
            if got is None:
                assert not waiting
                continue
            waiting.remove(got)
            behind.pop(got.key.user, None)  # its turn came
            for user, seen in behind.items():
                seen[got.key.user] = seen.get(got.key.user, 0) + 1
                assert seen[got.key.user] <= 1, f"{user} waited behind two grants of {got.key.user}"
        assert queue.waiting == len(waiting)
        assert queue.users_waiting == len({t.key.user for t in waiting})


async def test_a_free_slot_is_taken_at_once_and_release_hands_it_to_the_next_in_fair_order() -> None:
    slots = FairSlots(1)
    await slots.acquire(SlotKey("heavy", "a"))
    got: list[str] = []

    async def wait(key: SlotKey) -> None:
        await slots.acquire(key)
        got.append(key.user)

    async with trio.open_nursery() as nursery:
        nursery.cancel_scope.deadline = trio.current_time() + 5
        for n in range(3):
            nursery.start_soon(wait, SlotKey("heavy", f"a{n}"))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(wait, SlotKey("light"))
        await trio.testing.wait_all_tasks_blocked()
        assert (slots.waiting, slots.users_waiting, slots.borrowed_tokens) == (4, 2, 1)
        assert [(w.user, w.missions) for w in slots.waiting_users()] == [("heavy", 3), ("light", 1)]
        try:
            slots.acquire_nowait(SlotKey("other"))
            raise AssertionError("took a slot past the waiters")
        except trio.WouldBlock:
            pass
        for _ in range(4):
            slots.release()
            await trio.testing.wait_all_tasks_blocked()
    assert got == ["heavy", "light", "heavy", "heavy"]
    assert slots.borrowed_tokens == 1
    slots.release()
    assert slots.borrowed_tokens == 0


async def test_a_cancelled_waiter_leaves_and_a_slot_granted_as_it_was_cancelled_goes_on() -> None:
    slots = FairSlots(1)
    await slots.acquire()
    got: list[str] = []
    scopes: dict[str, trio.CancelScope] = {}

    async def wait(name: str) -> None:
        with trio.CancelScope() as scope:
            scopes[name] = scope
            await slots.acquire(SlotKey(name))
            got.append(name)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for name in ("a", "b", "c"):
                nursery.start_soon(wait, name)
                await trio.testing.wait_all_tasks_blocked()
            scopes["a"].cancel()  # waiting: leaves the queue
            await trio.testing.wait_all_tasks_blocked()
            assert slots.waiting == 2
            scopes["b"].cancel()  # b is cancelled, and before it runs ...
            slots.release()  # ... the slot is granted to it: it goes on to c
            await trio.testing.wait_all_tasks_blocked()
    assert got == ["c"]
    assert (slots.borrowed_tokens, slots.waiting) == (1, 0)


async def test_waits_are_observed() -> None:
    waits: list[float] = []
    clock = trio.testing.MockClock()
    slots = FairSlots(1, clock=lambda: clock.current_time(), observe_wait=waits.append)
    await slots.acquire()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(slots.acquire, SlotKey("u"))
        await trio.testing.wait_all_tasks_blocked()
        clock.jump(2.5)
        assert [round(w.longest_wait_s, 3) for w in slots.waiting_users()] == [2.5]
        slots.release()
    assert waits == [0.0, 2.5]


async def test_a_cancelled_caller_takes_no_slot_and_one_taken_is_kept() -> None:
    slots = FairSlots(2)
    with trio.CancelScope() as scope:
        scope.cancel()
        await slots.acquire(SlotKey("u"))
    assert slots.borrowed_tokens == 0
