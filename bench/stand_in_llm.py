"""A minimal OpenAI-compatible stand-in LLM for benchmarks: trio + h11, keep-alive, fixed latency.

    python bench/stand_in_llm.py --port 0 --latency-ms 100 [--backlog 4096]

Prints `listening <port>` once bound. `POST /v1/chat/completions` answers a one-step plan after
the latency; `GET /stats` answers `{"requests": n, "max_in_flight": m, "first_request_at": t}`,
`t` being the `time.monotonic()` (CLOCK_MONOTONIC, comparable across processes on one machine)
at which the first completion request since start or the last reset arrived, or null;
`POST /reset` zeroes them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial

import h11
import trio

PLAN = "```json\n" + json.dumps({"summary": "Bench", "steps": [
    {"summary": "Task", "toolName": "create_task", "params": {"title": "x"}, "rationale": "bench"}]}) + "\n```"
COMPLETION = json.dumps({"id": "bench", "object": "chat.completion", "model": "bench-model",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": PLAN},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}).encode()


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.first_request_at: float | None = None


async def handle(stream: trio.SocketStream, latency_s: float, stats: Stats) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                if not data and conn.their_state is not h11.MUST_CLOSE:
                    return
                continue
            if isinstance(event, h11.Request):
                target = event.target.decode()
                while not isinstance(event, h11.EndOfMessage):  # drain the body
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                body = await respond(target, latency_s, stats)
                headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
                await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=body)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return
    except (trio.BrokenResourceError, h11.RemoteProtocolError):
        return
    finally:
        await stream.aclose()


async def respond(target: str, latency_s: float, stats: Stats) -> bytes:
    if target == "/stats":
        return json.dumps({"requests": stats.requests, "max_in_flight": stats.max_in_flight,
                           "first_request_at": stats.first_request_at}).encode()
    if target == "/reset":
        stats.requests = stats.max_in_flight = 0
        stats.first_request_at = None
        return b"{}"
    if stats.first_request_at is None:
        stats.first_request_at = time.monotonic()
    stats.requests += 1
    stats.in_flight += 1
    stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
    try:
        if latency_s:
            await trio.sleep(latency_s)
        return COMPLETION
    finally:
        stats.in_flight -= 1


async def main(port: int, latency_s: float, backlog: int) -> None:
    stats = Stats()
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1", backlog=backlog)
    print(f"listening {listeners[0].socket.getsockname()[1]}", flush=True)
    await trio.serve_listeners(partial(handle, latency_s=latency_s, stats=stats), listeners)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=100)
    # A production server's listen backlog: the kernel caps it at net.core.somaxconn (4096 on
    # current Linux). A small one is a benchmark artefact, not a daemon cost: with a backlog of 5,
    # 20 clients connecting at once overflow the accept queue, the kernel drops their SYNs, and
    # each dropped one is retransmitted only after 1 s, so a tick takes a second longer.
    # (trio's own default, None, already asks for the maximum; the option makes it explicit.)
    parser.add_argument("--backlog", type=int, default=4096)
    args = parser.parse_args()
    try:
        trio.run(main, args.port, args.latency_ms / 1000, args.backlog)
    except KeyboardInterrupt:
        sys.exit(0)
