"""The LLM circuit breaker: the pure state machine, failure classification, and the probe task."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing

from observability.metrics import Metrics
from upstream.circuit import CLOSED, OPEN, PROBING, Breaker, LlmCircuit, LlmCircuitOpen, is_outage, unsendable
from upstream.errors import LlmBadResponse, LlmClosed, LlmError, LlmHttpError, LlmTimeout, LlmUnavailable


def refused() -> LlmUnavailable:
    try:
        raise LlmUnavailable("mana-llm unreachable") from httpx.ConnectError("refused")
    except LlmUnavailable as exc:
        return exc


def dropped() -> LlmUnavailable:
    try:
        raise LlmUnavailable("mana-llm unreachable") from httpx.ReadError("reset")
    except LlmUnavailable as exc:
        return exc


def sample(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name, {"service": "mana-ai"}) or 0.0


@pytest.mark.parametrize(("error", "outage"), [
    (LlmHttpError(503, "down"), True), (LlmHttpError(500, "boom"), True), (LlmHttpError(429, "slow down"), True),
    (LlmTimeout("slow"), True), (refused(), True), (dropped(), True),
    (LlmHttpError(400, "bad"), False), (LlmHttpError(401, "key"), False), (LlmHttpError(404, "model"), False),
    (LlmBadResponse("not json"), False), (LlmClosed(), False), (LlmCircuitOpen(), False),
])
def test_outage_failures_are_told_from_a_missions_own(error: LlmError, outage: bool) -> None:
    assert is_outage(error) is outage


def test_only_a_connection_that_was_never_made_is_unattributable() -> None:
    assert unsendable(refused())
    assert not unsendable(dropped()) and not unsendable(LlmHttpError(503, "down"))


def test_one_users_failures_never_open_it() -> None:
    breaker = Breaker(failures=3, min_users=2)
    for n in range(50):  # a prompt the upstream fails on with a 500, again and again
        assert breaker.failed("hostile", now=n) is None
    assert breaker.state == CLOSED


def test_failures_in_a_row_from_two_users_open_it() -> None:
    breaker = Breaker(failures=3, min_users=2, probe_base_s=2)
    assert breaker.failed("a", now=0) is None
    assert breaker.failed("a", now=0) is None
    assert breaker.failed("b", now=1) == OPEN
    assert (breaker.state, breaker.probe_at) == (OPEN, 3)
    assert breaker.failed("c", now=1) is None  # already open


def test_an_answer_in_between_resets_the_count() -> None:
    breaker = Breaker(failures=3, min_users=2)
    breaker.failed("a", now=0)
    breaker.failed("b", now=0)
    assert breaker.succeeded() is None
    breaker.failed("a", now=0)
    assert breaker.failed("b", now=0) is None and breaker.state == CLOSED


def test_a_refused_connection_opens_it_for_a_single_user_deployment() -> None:
    breaker = Breaker(failures=2, min_users=2)
    breaker.failed("only", now=0, unsendable=True)
    assert breaker.failed("only", now=0, unsendable=True) == OPEN


def test_probes_back_off_doubling_up_to_the_cap_and_an_answer_closes_it() -> None:
    breaker = Breaker(failures=1, min_users=1, probe_base_s=2, probe_max_s=5)
    assert breaker.failed("a", now=0) == OPEN
    delays = []
    for now in (2, 6, 11, 16):
        assert breaker.probe_started() == PROBING
        assert breaker.probe_failed(now=now) == OPEN
        delays.append(breaker.probe_at - now)
    assert delays == [4, 5, 5, 5]
    assert breaker.probe_started() == PROBING
    assert breaker.succeeded() == CLOSED
    assert breaker.failed("a", now=30) == OPEN and breaker.probe_at == 32  # the back-off starts over


def test_zero_failures_means_never_open() -> None:
    breaker = Breaker(failures=0, min_users=1)
    assert all(breaker.failed("a", now=n, unsendable=True) is None for n in range(10))


async def test_the_probe_task_closes_it_once_the_llm_answers(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    answers: list[LlmError | None] = [LlmHttpError(503, "down"), LlmHttpError(503, "down"), None]
    probed_at: list[float] = []
    closed = trio.Event()

    async def probe() -> LlmError | None:
        probed_at.append(trio.current_time())
        return answers.pop(0)

    circuit = LlmCircuit(Breaker(failures=2, min_users=2, probe_base_s=1, probe_max_s=60), metrics, probe=probe,
                         on_closed=closed.set)
    async with trio.open_nursery() as nursery:
        await nursery.start(circuit.run)
        assert circuit.admits() and sample(metrics, "mana_ai_llm_circuit_open") == 0
        assert circuit.failed(LlmHttpError(503, "down"), "a") is False  # its attempt counts
        assert circuit.failed(LlmHttpError(503, "down"), "b") is True  # this one opened it: parked
        assert not circuit.admits() and circuit.snapshot().state == OPEN
        assert sample(metrics, "mana_ai_llm_circuit_open") == 1
        assert sample(metrics, "mana_ai_llm_circuit_opened_total") == 1
        assert circuit.failed(LlmCircuitOpen(), "c") is True
        await closed.wait()
        assert circuit.admits() and circuit.snapshot().state == CLOSED
        circuit.close()
    assert [round(t) for t in probed_at] == [1, 3, 7]  # one at a time: after 1 s, then 2 s, then 4 s
    assert sample(metrics, "mana_ai_llm_circuit_open") == 0
    assert sample(metrics, "mana_ai_llm_circuit_opened_total") == 1  # failed probes are not new outages


async def test_a_call_answered_while_it_is_open_closes_it(autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    closed = trio.Event()

    async def probe() -> LlmError | None:
        raise AssertionError("no probe: it closed before one was due")

    circuit = LlmCircuit(Breaker(failures=1, min_users=1, probe_base_s=60), metrics, probe=probe,
                         on_closed=closed.set)
    async with trio.open_nursery() as nursery:
        await nursery.start(circuit.run)
        assert circuit.failed(refused(), "a") is True
        await trio.sleep(1)
        circuit.succeeded()  # a call that was already running came back
        await closed.wait()
        await trio.sleep(120)  # the probe task waits again, without probing
        assert circuit.admits()
        circuit.close()


async def test_a_missions_own_failure_neither_opens_it_nor_is_parked() -> None:
    circuit = LlmCircuit(Breaker(failures=1, min_users=1), Metrics(), probe=_never)
    assert circuit.failed(LlmHttpError(400, "bad"), "a") is False
    assert circuit.failed(LlmBadResponse("not json"), "b") is False
    assert circuit.admits()


async def _never() -> LlmError | None:
    raise AssertionError("not probed")
