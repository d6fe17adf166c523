"""The LLM slots, shared fairly between users.

`FairQueue` is the pure order of the waiters: when a slot frees, it goes to the waiting user
served least recently; within that user to its agent served least recently; within that agent
to the earliest due slot (then the earliest arrival). A user who has never been served, or not
for longer than every other waiting user, is next — so a user with one waiting mission is
behind at most one turn of each other waiting user, however many missions they have queued.
Each step is O(log n) (heaps keyed by the last service), cancellation is O(1) (the entry is
skipped when its turn comes).

Per-user weights would fit as deficit round robin: a user keeps its turn for `weight` grants
before it goes to the back; today every user's weight is 1, which is plain round robin.

`FairSlots` is the trio shell: `acquire(who)` / `release()` with the semantics of
`trio.CapacityLimiter` (a free slot is taken at once when nobody waits; a cancelled waiter
leaves the queue; a slot granted to a waiter cancelled at that instant passes to the next).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

__all__ = ["ANONYMOUS", "FairQueue", "FairSlots", "SlotKey", "Ticket", "WaitingUser"]


@dataclass(frozen=True)
class SlotKey:
    """Who asks for a slot: the user, the agent ("" for none), and the due slot (ISO instant)."""

    user: str
    agent: str = ""
    due: str = ""


ANONYMOUS = SlotKey("")


@dataclass(eq=False)
class Ticket:
    """One waiter. `live` turns False when it is granted or cancelled."""

    key: SlotKey
    arrival: int
    since: float = 0.0
    live: bool = True
    granted: bool = False
    event: trio.Event | None = field(default=None, repr=False)


class _Agent:
    __slots__ = ("heap", "last", "live", "queued")

    def __init__(self) -> None:
        self.heap: list[tuple[str, int, Ticket]] = []  # (due, arrival, ticket)
        self.last = 0  # the serial of its last grant
        self.live = 0
        self.queued = False  # has an entry in its user's heap


class _User:
    __slots__ = ("agents", "order", "last", "live", "queued")

    def __init__(self) -> None:
        self.agents: dict[str, _Agent] = {}
        self.order: list[tuple[int, int, str]] = []  # (last, arrival, agent)
        self.last = 0
        self.live = 0
        self.queued = False  # has an entry in the users' heap


class FairQueue:
    """The waiting tickets, in fair order (see the module's docstring). Pure: no I/O, no clock."""

    def __init__(self) -> None:
        self._users: dict[str, _User] = {}
        self._order: list[tuple[int, int, str]] = []  # (last, arrival, user)
        self._serial = 0  # grants and arrivals, in order
        self._waiting = 0
        self._users_waiting = 0
        self._prune_at = 1024

    @property
    def waiting(self) -> int:
        """Tickets waiting (cancelled ones not counted)."""
        return self._waiting

    @property
    def users_waiting(self) -> int:
        """Users with at least one ticket waiting."""
        return self._users_waiting

    def push(self, key: SlotKey, since: float = 0.0) -> Ticket:
        self._serial += 1
        ticket = Ticket(key, self._serial, since)
        user = self._users.get(key.user)
        if user is None:
            user = self._users[key.user] = _User()
        agent = user.agents.get(key.agent)
        if agent is None:
            agent = user.agents[key.agent] = _Agent()
        heapq.heappush(agent.heap, (key.due, ticket.arrival, ticket))
        agent.live += 1
        if not agent.queued:
            agent.queued = True
            heapq.heappush(user.order, (agent.last, ticket.arrival, key.agent))
        user.live += 1
        if user.live == 1:
            self._users_waiting += 1
        if not user.queued:
            user.queued = True
            heapq.heappush(self._order, (user.last, ticket.arrival, key.user))
        self._waiting += 1
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Take a waiting ticket out (its heap entry is skipped later); no-op once granted."""
        if not ticket.live:
            return
        ticket.live = False
        user = self._users[ticket.key.user]
        user.agents[ticket.key.agent].live -= 1
        user.live -= 1
        if user.live == 0:
            self._users_waiting -= 1
        self._waiting -= 1

    def pop(self) -> Ticket | None:
        """The next ticket to serve (now granted), or None when nobody waits."""
        while self._order:
            _, _, name = heapq.heappop(self._order)
            user = self._users[name]
            user.queued = False
            if user.live == 0:  # only cancelled tickets were left: forget its agents
                user.agents.clear()
                user.order.clear()
                continue
            ticket = self._pop_agent(user)
            self._serial += 1
            user.last = self._serial
            if user.live > 0:
                user.queued = True
                heapq.heappush(self._order, (user.last, self._serial, name))
            self._prune()
            return ticket
        return None

    def _pop_agent(self, user: _User) -> Ticket:
        while True:
            _, _, name = heapq.heappop(user.order)
            agent = user.agents[name]
            agent.queued = False
            if agent.live == 0:  # only cancelled tickets were left
                agent.heap.clear()
                continue
            while True:
                _, _, ticket = heapq.heappop(agent.heap)
                if ticket.live:
                    break
            ticket.live, ticket.granted = False, True
            agent.live -= 1
            user.live -= 1
            if user.live == 0:
                self._users_waiting -= 1
            self._waiting -= 1
            self._serial += 1
            agent.last = self._serial
            if agent.live > 0:
                agent.queued = True
                heapq.heappush(user.order, (agent.last, self._serial, name))
            elif user.live == 0:  # the user's turn is over: its agents start afresh next time
                user.agents.clear()
                user.order.clear()
            return ticket

    def _prune(self) -> None:
        """Forget idle users whose last grant is older than every waiting user's: they would
        come first when they return either way. Amortised O(1): runs when the table doubled."""
        if len(self._users) < self._prune_at:
            return
        oldest = self._order[0][0] if self._order else self._serial + 1
        for name in [n for n, u in self._users.items() if not u.queued and u.live == 0 and u.last < oldest]:
            del self._users[name]
        self._prune_at = max(1024, 2 * len(self._users))

    def waiters(self) -> list[Ticket]:
        """Every waiting ticket (for inspection; O(n), never on the acquire path)."""
        return [t for u in self._users.values() for a in u.agents.values() for _, _, t in a.heap if t.live]


@dataclass(frozen=True)
class WaitingUser:
    user: str
    missions: int
    longest_wait_s: float


class FairSlots:
    """`total` slots for LLM requests, granted in `FairQueue` order when they run short."""

    def __init__(self, total: int, *, clock: Callable[[], float] = trio.current_time,
                 observe_wait: Callable[[float], None] = lambda s: None) -> None:
        if total < 1:
            raise ValueError(f"total must be >= 1, got {total}")
        self._total = total
        self._borrowed = 0
        self._queue = FairQueue()
        self._clock = clock
        self._observe_wait = observe_wait

    @property
    def total_tokens(self) -> int:
        return self._total

    @property
    def borrowed_tokens(self) -> int:
        return self._borrowed

    @property
    def waiting(self) -> int:
        return self._queue.waiting

    @property
    def users_waiting(self) -> int:
        return self._queue.users_waiting

    def acquire_nowait(self, who: SlotKey = ANONYMOUS) -> None:
        """Take a free slot, or raise `trio.WouldBlock` (also when others wait: no overtaking)."""
        if self._borrowed >= self._total or self._queue.waiting:
            raise trio.WouldBlock
        self._borrowed += 1
        self._observe_wait(0.0)

    async def acquire(self, who: SlotKey = ANONYMOUS) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.acquire_nowait(who)
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()  # a slot taken is never lost to a cancel
            return
        ticket = self._queue.push(who, self._clock())
        ticket.event = trio.Event()
        try:
            await ticket.event.wait()
        except BaseException:
            if ticket.granted:  # granted as it was cancelled: the slot goes on to the next
                self.release()
            else:
                self._queue.cancel(ticket)
            raise
        self._observe_wait(self._clock() - ticket.since)

    def release(self) -> None:
        """Give a slot back: to the next waiter in fair order, or to the pool."""
        if self._borrowed <= 0:
            raise RuntimeError("release without a slot")
        ticket = self._queue.pop()
        if ticket is None:
            self._borrowed -= 1
            return
        assert ticket.event is not None
        ticket.event.set()  # the slot passes on: borrowed stays

    def waiting_users(self) -> list[WaitingUser]:
        """Who waits, with how many missions and for how long; the longest wait first."""
        now = self._clock()
        by_user: dict[str, tuple[int, float]] = {}
        for ticket in self._queue.waiters():
            count, since = by_user.get(ticket.key.user, (0, now))
            by_user[ticket.key.user] = (count + 1, min(since, ticket.since))
        rows = [WaitingUser(user, count, max(0.0, now - since)) for user, (count, since) in by_user.items()]
        return sorted(rows, key=lambda r: (-r.longest_wait_s, r.user))
