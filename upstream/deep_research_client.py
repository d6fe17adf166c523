"""mana-research's async research jobs: submit one, poll it.

``submit`` posts ``/api/v1/internal/research/async`` (30 s), ``poll`` gets
``/api/v1/internal/research/async/{taskId}`` (15 s). Both carry mana-research's own service key
(``X-Service-Key``, from ``MANA_AI_RESEARCH_SERVICE_KEY`` — never the daemon's
``MANA_SERVICE_KEY``), ``X-User-Id`` and ``X-App-Id: mana-ai``; each runs under
``trio.fail_after`` and reads at most ``max_response_bytes``.

Failures are values, ``CallFailed(reason)``, with a bounded reason label (``<stage>`` is
``submit`` or ``poll``)::

    <stage>-<status>        a non-2xx answer, e.g. "submit-400", "poll-404" (unknown task)
    <stage>-timeout         the call used its whole time budget
    <stage>-unreachable     no usable response: connect refused, reset, protocol error
    <stage>-too-large       a 2xx body over max_response_bytes
    <stage>-bad-response    a 2xx body that is not JSON or not the contract's shape

``trio.Cancelled`` is never caught; nothing here raises for I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypedDict
from urllib.parse import quote

import httpx
import trio

from planner.deep_research import DEEP_RESEARCH_PROVIDER, DeepAnswer
from upstream._http import declared_larger_than, read_up_to

__all__ = [
    "ASYNC_PATH",
    "CallFailed",
    "DeepResearchClient",
    "JobState",
    "Submitted",
    "open_deep_research_http_client",
]

ASYNC_PATH = "/api/v1/internal/research/async"
APP_ID = "mana-ai"
CONNECT_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 4
_PROVIDER_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # a metric label: bounded, plain

JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
_STATUSES: tuple[JobStatus, ...] = ("queued", "running", "completed", "failed", "cancelled")


class SubmitRequest(TypedDict):
    query: str
    provider: str


@dataclass(frozen=True, slots=True)
class Submitted:
    task_id: str
    provider_id: str


@dataclass(frozen=True, slots=True)
class JobState:
    """A polled job; ``answer`` only for ``completed`` (None: no usable text). mana-research's
    ``error`` text of a failed job is not kept: it may quote the query, which is mission text."""

    status: JobStatus
    answer: DeepAnswer | None = None


@dataclass(frozen=True, slots=True)
class CallFailed:
    """A call that gave nothing usable; the caller logs it once, with its own context."""

    reason: str
    status: int | None = None  # the HTTP status of a non-2xx answer
    error: str | None = None  # the exception's type name, never its message (it may echo a URL)


def open_deep_research_http_client() -> httpx.AsyncClient:
    """One client per process for mana-research (a few calls per cycle at most)."""
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS),
        timeout=httpx.Timeout(30.0, connect=CONNECT_TIMEOUT_S),
        trust_env=False,  # no proxy or netrc credentials from the environment
    )


class DeepResearchClient:
    def __init__(self, http: httpx.AsyncClient, *, base_url: str, service_key: str,
                 submit_timeout_s: float = 30, poll_timeout_s: float = 15,
                 max_response_bytes: int = 4_194_304, provider: str = DEEP_RESEARCH_PROVIDER) -> None:
        for name, value in (("submit_timeout_s", submit_timeout_s), ("poll_timeout_s", poll_timeout_s)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if not service_key or service_key != service_key.strip():
            raise ValueError("service_key must be non-empty without surrounding whitespace")
        self._http = http
        self._url = base_url.rstrip("/") + ASYNC_PATH
        self._key = service_key
        self._submit_timeout_s = float(submit_timeout_s)
        self._poll_timeout_s = float(poll_timeout_s)
        self._max_response_bytes = max_response_bytes
        self.provider = provider

    def _headers(self, user_id: str) -> dict[str, str]:
        return {"X-Service-Key": self._key, "X-User-Id": user_id, "X-App-Id": APP_ID}

    async def submit(self, user_id: str, query: str) -> Submitted | CallFailed:
        """Start a job; its task id and the provider that runs it."""
        body: SubmitRequest = {"query": query, "provider": self.provider}
        headers = {**self._headers(user_id), "Content-Type": "application/json"}
        answer = await self._call("submit", "POST", self._url, headers, self._submit_timeout_s,
                                  json.dumps(body, ensure_ascii=False).encode())
        if isinstance(answer, CallFailed):
            return answer
        task_id = answer.get("taskId")
        if not isinstance(task_id, str) or not task_id or len(task_id) > 256:
            return _failed("submit-bad-response")
        return Submitted(task_id, self._provider_of(answer))

    async def poll(self, user_id: str, task_id: str) -> JobState | CallFailed:
        """The job's state; ``poll-404`` when mana-research does not know it (for this user)."""
        url = f"{self._url}/{quote(task_id, safe='')}"
        answer = await self._call("poll", "GET", url, self._headers(user_id), self._poll_timeout_s, None)
        if isinstance(answer, CallFailed):
            return answer
        status = answer.get("status")
        if status not in _STATUSES:
            return _failed("poll-bad-response")
        state: JobStatus = status
        if state == "completed":
            result = answer.get("result")
            return JobState(state, DeepAnswer.from_json(result.get("answer") if isinstance(result, Mapping) else None))
        return JobState(state)

    def _provider_of(self, answer: Mapping[str, object]) -> str:
        provider = answer.get("providerId")
        return provider if isinstance(provider, str) and _PROVIDER_ID.match(provider) else self.provider

    async def _call(self, stage: str, method: str, url: str, headers: dict[str, str], timeout_s: float,
                    content: bytes | None) -> Mapping[str, object] | CallFailed:
        """The decoded JSON object of a 2xx answer, or a ``CallFailed``."""
        connect_s = self._http.timeout.connect
        timeout = httpx.Timeout(timeout_s, connect=timeout_s if connect_s is None else min(connect_s, timeout_s))
        try:
            with trio.fail_after(timeout_s):
                async with self._http.stream(method, url, content=content, headers=headers,
                                             timeout=timeout) as response:
                    if not response.is_success:
                        return _failed(f"{stage}-{response.status_code}", status=response.status_code)
                    if declared_larger_than(response, self._max_response_bytes):
                        return _failed(f"{stage}-too-large")
                    raw, more = await read_up_to(response, self._max_response_bytes)
        except (trio.TooSlowError, httpx.TimeoutException) as exc:
            return _failed(f"{stage}-timeout", exc)
        except httpx.TransportError as exc:
            return _failed(f"{stage}-unreachable", exc)
        except httpx.DecodingError as exc:
            return _failed(f"{stage}-bad-response", exc)
        if more:
            return _failed(f"{stage}-too-large")
        try:
            data: object = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            return _failed(f"{stage}-bad-response", exc)
        if not isinstance(data, Mapping):
            return _failed(f"{stage}-bad-response")
        return data


def _failed(reason: str, exc: BaseException | None = None, *, status: int | None = None) -> CallFailed:
    return CallFailed(reason, status, None if exc is None else type(exc).__name__)
