"""CPU per LLM call in the calling process, for each way of making the call.

    python bench/llm_client_cpu.py [--calls 400] [--concurrency 8] [--runs 5] [--latency-ms 2]

The stand-in LLM (bench/stand_in_llm.py) runs as a separate process, so the figures are the
caller's own CPU (``time.process_time``) divided by the number of calls. Every variant does the
whole call: the shared ``trio.CapacityLimiter``, ``trio.fail_after``, the POST, a body read under
the size cap, and ``parse_completion``. Variants:

  httpx-before     what upstream/llm.py did before the lean client: one ``httpx.AsyncClient``,
                   ``client.stream(...)`` with a per-request ``httpx.Timeout``, bounded read
  httpx-tuned      one client, ``trust_env=False``, headers set once on the client, no per-request
                   timeout object, ``send(stream=True)`` then ``aread()`` after a Content-Length
                   check (weaker cap: a chunked body is read whole)
  httpx-transport  ``AsyncHTTPTransport.handle_async_request`` directly: no client layer at all
                   (the body is read whole)
  httpcore         ``httpcore.AsyncConnectionPool.request`` directly (no decoding, body read whole)
  h11-client       upstream/h11_transport.py's ``H11Client.stream`` (the lean client) directly
  llm-client       ``LlmClient.complete`` as the daemon calls it, on the lean client: on top of
                   the exchange it builds and JSON-encodes the request body, and keeps health
  h11-floor        the least a call can cost over h11: a bare list of connections, no timeouts,
                   no error handling, no decoding (a reference point, not a client)

Each run measures every variant twice: ``sequential`` (``--calls`` calls one after the other)
and ``concurrent`` (``--concurrency`` tasks sharing the calls; the pool then holds that many
connections). Variants alternate within a run so that noise from other processes hits them
alike; the report gives min and median µs per call over the runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h11  # noqa: E402
import httpcore  # noqa: E402
import httpx  # noqa: E402
import trio  # noqa: E402

from bench._harness import stand_in_llm  # noqa: E402
from upstream._http import declared_larger_than, read_up_to  # noqa: E402
from upstream.fair_slots import FairSlots  # noqa: E402
from upstream.h11_transport import Endpoint, H11Client  # noqa: E402
from upstream.llm import (  # noqa: E402
    Completion,
    LlmClient,
    chat_completions_url,
    open_llm_http_client,
    parse_completion,
)

MODEL = "bench-model"
TIMEOUT_S = 30.0
MAX_BYTES = 1_048_576
PAYLOAD = json.dumps({"model": MODEL, "temperature": 0.3, "messages": [
    {"role": "system", "content": "You plan. " * 300},
    {"role": "user", "content": "# Mission\n" + "Context line. " * 400}]}).encode()
HEADERS = {"content-type": "application/json", "authorization": "Bearer bench-key", "x-api-key": "bench-key"}

Call = Callable[[], Awaitable[Completion]]
Variant = Callable[[str, int], Any]  # (base url, concurrency) -> async context manager of a Call


async def _bounded(limiter: trio.CapacityLimiter, exchange: Callable[[], Awaitable[bytes]]) -> Completion:
    async with limiter:
        with trio.fail_after(TIMEOUT_S):
            body = await exchange()
    return parse_completion(body, MODEL, 1)


@asynccontextmanager
async def httpx_before(base_url: str, concurrency: int) -> AsyncIterator[Call]:
    url = chat_completions_url(base_url)
    limiter = trio.CapacityLimiter(concurrency)
    timeout = httpx.Timeout(TIMEOUT_S, connect=5.0)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency,
                                                     max_keepalive_connections=concurrency),
                                 timeout=httpx.Timeout(120.0, connect=5.0)) as client:
        async def exchange() -> bytes:
            async with client.stream("POST", url, content=PAYLOAD, headers=HEADERS, timeout=timeout) as response:
                if declared_larger_than(response, MAX_BYTES):
                    raise RuntimeError("too large")
                body, more = await read_up_to(response, MAX_BYTES)
                assert response.status_code == 200 and not more
                return body

        yield lambda: _bounded(limiter, exchange)


@asynccontextmanager
async def httpx_tuned(base_url: str, concurrency: int) -> AsyncIterator[Call]:
    url = chat_completions_url(base_url)
    limiter = trio.CapacityLimiter(concurrency)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency,
                                                     max_keepalive_connections=concurrency),
                                 timeout=httpx.Timeout(TIMEOUT_S, connect=5.0), trust_env=False,
                                 headers=HEADERS) as client:
        async def exchange() -> bytes:
            response = await client.send(client.build_request("POST", url, content=PAYLOAD), stream=True)
            try:
                if declared_larger_than(response, MAX_BYTES):
                    raise RuntimeError("too large")
                body = await response.aread()
            finally:
                await response.aclose()
            assert response.status_code == 200
            return body

        yield lambda: _bounded(limiter, exchange)


@asynccontextmanager
async def httpx_transport(base_url: str, concurrency: int) -> AsyncIterator[Call]:
    url = httpx.URL(chat_completions_url(base_url))
    limiter = trio.CapacityLimiter(concurrency)
    headers = httpx.Headers(HEADERS)
    extensions = {"timeout": {"connect": 5.0, "read": TIMEOUT_S, "write": TIMEOUT_S, "pool": TIMEOUT_S}}
    async with httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=concurrency,
                                                            max_keepalive_connections=concurrency),
                                        trust_env=False) as transport:
        async def exchange() -> bytes:
            request = httpx.Request("POST", url, headers=headers, content=PAYLOAD, extensions=extensions)
            response = await transport.handle_async_request(request)
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            assert response.status_code == 200
            return body

        yield lambda: _bounded(limiter, exchange)


@asynccontextmanager
async def httpcore_pool(base_url: str, concurrency: int) -> AsyncIterator[Call]:
    url = chat_completions_url(base_url)
    limiter = trio.CapacityLimiter(concurrency)
    headers = [(k.encode(), v.encode()) for k, v in HEADERS.items()]
    async with httpcore.AsyncConnectionPool(max_connections=concurrency,
                                            max_keepalive_connections=concurrency) as pool:
        async def exchange() -> bytes:
            response = await pool.request("POST", url, headers=headers, content=PAYLOAD)
            assert response.status == 200
            return response.content

        yield lambda: _bounded(limiter, exchange)


@asynccontextmanager
async def h11_floor(base_url: str, concurrency: int) -> AsyncIterator[Call]:
    """The least a call can cost over h11: a list of connections, no timeouts, no error handling."""
    host, port = base_url.removeprefix("http://").split(":")
    limiter = trio.CapacityLimiter(concurrency)
    headers = [("host", f"{host}:{port}"), *HEADERS.items(), ("content-length", str(len(PAYLOAD)))]
    idle: list[tuple[trio.SocketStream, h11.Connection]] = []
    opened: list[trio.SocketStream] = []

    async def exchange() -> bytes:
        if idle:
            stream, conn = idle.pop()
        else:
            stream, conn = await trio.open_tcp_stream(host, int(port)), h11.Connection(h11.CLIENT)
            opened.append(stream)
        head = conn.send(h11.Request(method="POST", target="/v1/chat/completions", headers=headers))
        data = conn.send(h11.Data(data=PAYLOAD))
        end = conn.send(h11.EndOfMessage())
        assert head is not None and data is not None and end is not None
        await stream.send_all(head + data + end)
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
            elif type(event) is h11.Data:
                body += event.data
            elif type(event) is h11.EndOfMessage:
                break
        conn.start_next_cycle()
        idle.append((stream, conn))
        return bytes(body)

    try:
        yield lambda: _bounded(limiter, exchange)
    finally:
        for stream in opened:
            await stream.aclose()


@asynccontextmanager
async def h11_client(base_url: str, concurrency: int) -> AsyncIterator[Call]:
    endpoint = Endpoint.from_url(chat_completions_url(base_url))
    limiter = trio.CapacityLimiter(concurrency)
    headers = [(k.encode(), v.encode()) for k, v in HEADERS.items()]
    async with H11Client(concurrency) as http:
        async def exchange() -> bytes:
            async with http.stream(endpoint, headers, PAYLOAD) as response:
                if (response.declared_length or 0) > MAX_BYTES:
                    raise RuntimeError("too large")
                body, more = await response.read_up_to(MAX_BYTES)
                assert response.status == 200 and not more
                return body

        yield lambda: _bounded(limiter, exchange)


@asynccontextmanager
async def llm_client(base_url: str, concurrency: int) -> AsyncIterator[Call]:
    async with open_llm_http_client(concurrency) as http:
        client = LlmClient(http, base_url=base_url, api_key="bench-key", model=MODEL, timeout_s=TIMEOUT_S,
                           retries=0, limiter=FairSlots(concurrency), max_response_bytes=MAX_BYTES)
        yield lambda: client.complete("You plan. " * 300, "# Mission\n" + "Context line. " * 400)


VARIANTS: dict[str, Variant] = {
    "httpx-before": httpx_before,
    "httpx-tuned": httpx_tuned,
    "httpx-transport": httpx_transport,
    "httpcore": httpcore_pool,
    "h11-client": h11_client,
    "llm-client": llm_client,
    "h11-floor": h11_floor,
}


async def cpu_us_per_call(call: Call, calls: int, tasks: int) -> float:
    """The process's CPU time per call while `tasks` tasks make `calls` calls in all."""
    async def worker(n: int) -> None:
        for _ in range(n):
            await call()

    gc.collect()
    started = time.process_time()
    async with trio.open_nursery() as nursery:
        for i in range(tasks):
            nursery.start_soon(worker, calls // tasks + (1 if i < calls % tasks else 0))
    return (time.process_time() - started) / calls * 1e6


async def main(calls: int, concurrency: int, runs: int, latency_ms: float, only: list[str]) -> None:
    samples: dict[str, dict[str, list[float]]] = {name: {"sequential": [], "concurrent": []} for name in only}
    async with stand_in_llm(latency_ms) as url:
        for _ in range(runs):
            for name in only:
                async with VARIANTS[name](url, concurrency) as call:
                    async with trio.open_nursery() as warm:       # open every pooled connection
                        for _ in range(concurrency):
                            warm.start_soon(call)
                    samples[name]["sequential"].append(await cpu_us_per_call(call, calls, 1))
                    samples[name]["concurrent"].append(await cpu_us_per_call(call, calls, concurrency))
    report = {name: {mode: {"min_us": round(min(v)), "median_us": round(statistics.median(v))}
                     for mode, v in modes.items()} for name, modes in samples.items()}
    print(json.dumps({"calls": calls, "concurrency": concurrency, "runs": runs, "latency_ms": latency_ms,
                      "cpu_per_call": report}, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=2)
    parser.add_argument("--only", nargs="*", choices=sorted(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    trio.run(main, args.calls, args.concurrency, args.runs, args.latency_ms, args.only)
