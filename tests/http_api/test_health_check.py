"""`/health`'s database check (`DatabaseCheck` in http_api/app.py): one ping in flight, shared."""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg
import trio

from conftest import PgServer
from http_api.app import DatabaseCheck

CONCURRENT = 200


async def test_concurrent_checks_share_one_ping(pool: asyncpg.Pool) -> None:
    check = DatabaseCheck(pool)
    results: list[bool] = []

    async def one() -> None:
        results.append(await check.ok())

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(CONCURRENT):
                nursery.start_soon(one)
    assert results == [True] * CONCURRENT
    assert check.pings == 1
    assert await check.ok() is True
    assert check.pings == 2  # nothing is reused once the ping has ended


async def test_a_ping_cancelled_with_its_request_is_taken_over(pool: asyncpg.Pool) -> None:
    check = DatabaseCheck(pool)
    results: list[bool] = []

    async def waiter() -> None:
        results.append(await check.ok())

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            first = trio.CancelScope()

            async def first_request() -> None:
                with first:
                    results.append(await check.ok())

            nursery.start_soon(first_request)
            while check.pings == 0:  # the first request's ping is in flight (it needs Postgres to end)
                await trio.lowlevel.checkpoint()
            nursery.start_soon(waiter)
            first.cancel()  # its client went away
    assert results == [True]  # the waiter's, from the ping it ran itself
    assert first.cancelled_caught
    assert check.pings == 2


async def test_a_lost_database_fails_the_next_check(pool: asyncpg.Pool, pg: PgServer, db_dsn: str) -> None:
    check = DatabaseCheck(pool, timeout_s=2)
    assert await check.ok() is True
    await trio.to_thread.run_sync(pg.sql, f"DROP DATABASE {urlsplit(db_dsn).path[1:]} WITH (FORCE)")
    with trio.fail_after(3):
        assert await check.ok() is False


async def test_a_slow_answer_is_forgiven_for_a_while_a_hung_database_is_not(aio_loop: None, db_dsn: str) -> None:
    from pg_proxy import pg_tcp_proxy
    from store.pool import close_pool, connect_with_retry

    async with pg_tcp_proxy(db_dsn) as proxy:
        pool = await connect_with_retry(proxy.dsn, 2, 10)
        try:
            check = DatabaseCheck(pool, timeout_s=0.2, slow_grace_s=1.5)
            assert await check.ok() is True
            proxy.stalled = True  # no answer: an overloaded loop and a hung server look alike
            assert await check.ok() is True  # within the grace after the last good ping
            await trio.sleep(1.5)
            assert await check.ok() is False  # still nothing: the database is not ok
            proxy.stalled = False
            with trio.fail_after(10):
                while not await check.ok():
                    await trio.sleep(0.1)
        finally:
            proxy.stalled = False
            await close_pool(pool)
