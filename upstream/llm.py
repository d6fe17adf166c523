"""The one HTTP call to mana-llm, bounded, limited and retried.

``LlmClient.complete(system, user)`` posts the TypeScript service's chat-completion body and returns a
``Completion``; ``LlmClient.chat_with_tools(messages, tools)`` posts one round of the
tool-calling planner and returns an ``AssistantTurn``, with the same retries and bounds.
Unlike the TypeScript service (no timeout, no retry), every attempt runs under
``trio.fail_after(timeout_s)`` and a bounded number of retries covers connect failures, 429
and 5xx. Every request sent is one try (``1 + retries`` at most): the h11 client never sends
one again on its own, so a connection dropped after the request went out and before any
answer is a counted ``connect`` retry here (the LLM may be working on the first). The HTTP
goes over the lean h11 client (upstream/h11_transport.py), not httpx: this call is the daemon's
hot path. Its transport errors are httpx's types, mapped to the ``LlmError`` family of
``upstream.errors``: ``LlmUnavailable`` (no response after the retries), ``LlmHttpError``
(non-2xx), ``LlmTimeout`` (an attempt used its whole ``timeout_s``), ``LlmBadResponse`` (an
unusable 2xx body) and ``LlmClosed`` (shutdown before the request started).

A missing or null ``message.content`` is not an error: it is ``""``, as in the TypeScript service, and
the strict parser then reports ``no JSON block found``. A reasoning model's ``reasoning_content``
(or ``reasoning``) is never read as the answer: only its length is kept (``reasoning_chars``,
with the think blocks before the content's answer; ``planner.reasoning``). A tool-calling
turn's content is its answer with those blocks set aside; a completion's content is kept whole
for the strict parser, which sets them aside itself. With ``response_format`` given (the
``json`` planner's structured output, planner/plan_schema.py) the request carries it; without,
the body is the TypeScript service's. With ``max_tokens`` set, both requests
carry it (unset, the body is the TypeScript service's); the answer's ``finish_reason`` is passed on
(``"length"``: cut off at a token limit) for the planner to refuse.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal, NotRequired, TypedDict, TypeVar

import httpx
import trio

from observability.redact import safe_url
from planner.chat import AssistantTurn, RawToolCall
from planner.reasoning import set_aside_reasoning
from upstream.circuit import LlmCircuitOpen
from upstream.errors import (
    ERROR_TEXT_CHARS,
    LlmBadResponse,
    LlmClosed,
    LlmError,
    LlmHttpError,
    LlmTimeout,
    LlmUnavailable,
)
from upstream.fair_slots import ANONYMOUS, FairSlots, SlotKey, WaitingUser
from upstream.h11_transport import Endpoint, H11Client, H11Response

__all__ = [
    "Completion",
    "LlmClient",
    "LlmHealth",
    "StartupCheck",
    "models_probe",
    "open_llm_http_client",
    "parse_assistant_turn",
]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
#: the client's longest wait on the socket (either way); ``LlmClient`` sets its own ``timeout_s``
#: per request instead, so that its ``fail_after(timeout_s)`` is what ends a slow attempt.
DEFAULT_TIMEOUT_S = 120.0
_ERROR_TEXT_BYTES = 4 * ERROR_TEXT_CHARS  # enough UTF-8 for 500 characters
_MAX_EXPONENT = 60  # 2**60 * any sane base is far above any cap; avoids float overflow

RetryReason = Literal["connect", "429", "5xx"]
_PROBE = SlotKey("")  # the circuit's probe: the one request let through while the circuit is open
_T = TypeVar("_T")


@dataclass(frozen=True)
class Completion:
    content: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    attempts: int
    finish_reason: str = "stop"  # absent in the answer: "stop"; "length": cut off at a token limit
    reasoning_chars: int = 0  # think blocks before the answer and reasoning_content: their length only


@dataclass(frozen=True)
class LlmHealth:
    """How the last calls went: `ok` until a call fails, again after the next success."""

    ok: bool
    consecutive_failures: int
    last_success_at: float | None  # unix time
    last_error: str | None  # the error's kind, never a response body (it may echo user text)
    last_call: Literal["none", "ok", "failed"] = "none"  # "none": no call made yet (`ok` is then true)


@dataclass
class StartupCheck:
    """The start-up probe of the LLM (MANA_AI_LLM_STARTUP_PROBE), as /health shows it."""

    state: Literal["off", "pending", "ok", "failed"] = "off"
    error: str | None = None  # what went wrong (a status or a connection problem, never a body)

    def as_json(self) -> dict[str, object]:
        return {"state": self.state, "error": self.error}


class ChatMessage(TypedDict):
    role: Literal["system", "user"]
    content: str


class ChatRequest(TypedDict):
    """The request body, keys in the TypeScript service's order, no stream; ``response_format``
    and ``max_tokens`` only when configured (then last)."""

    model: str
    temperature: float
    messages: list[ChatMessage]
    response_format: NotRequired[Mapping[str, object]]
    max_tokens: NotRequired[int]


def chat_completions_url(base_url: str) -> str:
    """The endpoint under a base URL given with or without OpenAI's usual trailing `/v1`."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    return base + "/v1/chat/completions"


def open_llm_http_client(concurrency: int) -> H11Client:
    """One client per process for mana-llm, its keep-alive pool sized to the caller's limiter.

    The lean h11 client, not httpx: this call is the daemon's hot path and httpx costs several
    times its CPU per call (upstream/h11_transport.py, docs/architecture.md). Enter it with
    ``async with``; leaving closes its connections.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    return H11Client(concurrency, connect_timeout_s=CONNECT_TIMEOUT_S, read_timeout_s=DEFAULT_TIMEOUT_S)


# --- one exchange and its verdict -----------------------------------------------------------


@dataclass(frozen=True)
class _Answered:
    """A response arrived: its status, Retry-After and (for 2xx the whole, else a prefix of) body."""

    status: int
    retry_after: str | None
    body: bytes


@dataclass(frozen=True)
class _Unreached:
    """The request got no response (connect refused, reset before the headers, ...)."""

    error: httpx.TransportError


@dataclass(frozen=True)
class _Failed:
    error: LlmError
    retry: RetryReason | None  # None: not worth retrying
    retry_after_s: float | None = None
    cause: BaseException | None = None


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def retry_after_s(value: str | None, now: float) -> float | None:
    """A Retry-After header (delta-seconds or HTTP-date) as seconds from ``now`` (epoch s).

    None when absent or unparsable; a date in the past is 0.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


def backoff_s(retry_index: int, *, base_s: float, max_s: float, jitter: float) -> float:
    """Full-jitter exponential backoff: ``min(max_s, base_s * 2**n) * jitter``, jitter in [0, 1)."""
    return min(max_s, base_s * 2.0 ** min(retry_index, _MAX_EXPONENT)) * jitter


def _judge(outcome: _Answered | _Unreached, url: str, now: float) -> bytes | _Failed:
    """The 2xx body, or why the attempt failed and whether a retry may help."""
    if isinstance(outcome, _Unreached):
        error = LlmUnavailable(f"mana-llm unreachable at {url}: {_describe(outcome.error)}")
        return _Failed(error, "connect", cause=outcome.error)
    if 200 <= outcome.status < 300:
        return outcome.body
    text = outcome.body.decode("utf-8", errors="replace")  # fetch's text() decodes UTF-8 too
    http_error = LlmHttpError(outcome.status, text)
    if outcome.status == 429 or 500 <= outcome.status < 600:
        reason: RetryReason = "429" if outcome.status == 429 else "5xx"
        return _Failed(http_error, reason, retry_after_s(outcome.retry_after, now))
    return _Failed(http_error, None)


def _reasoning_field_chars(message: object) -> int:
    """The length of the message's reasoning fields (vLLM, DeepSeek: ``reasoning_content``;
    Ollama, OpenRouter: ``reasoning``); never their text."""
    if not isinstance(message, dict):
        return 0
    return sum(len(value) for key in ("reasoning_content", "reasoning")
               if isinstance(value := message.get(key), str))


def _token_count(usage: object, key: str) -> int:
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def parse_completion(body: bytes, requested_model: str, attempts: int) -> Completion:
    """A chat.completion body as a ``Completion``; raises ``LlmBadResponse`` when unusable."""
    try:
        data: Any = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise LlmBadResponse("mana-llm returned invalid JSON") from exc
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise LlmBadResponse("mana-llm response has no choices")
    first = choices[0]
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if content is None:
        content = ""  # the TypeScript service's `?? ''`
    elif not isinstance(content, str):
        raise LlmBadResponse("mana-llm content is not a string")
    finish = first.get("finish_reason") if isinstance(first, dict) else None
    usage = data.get("usage")
    model = data.get("model")
    return Completion(
        content=content,
        prompt_tokens=_token_count(usage, "prompt_tokens"),
        completion_tokens=_token_count(usage, "completion_tokens"),
        model=model if isinstance(model, str) else requested_model,
        attempts=attempts,
        finish_reason=finish if isinstance(finish, str) else "stop",
        reasoning_chars=_reasoning_field_chars(message) + set_aside_reasoning(content).reasoning_chars,
    )


def parse_assistant_turn(body: bytes, requested_model: str, attempts: int) -> AssistantTurn:
    """A chat.completion body with optional ``tool_calls``; raises ``LlmBadResponse`` when unusable.

    Content follows ``parse_completion`` (null is ""). A call without an id gets ``call_<i>``
    (the tool answer must name one); a call whose ``arguments`` is an object is taken as its
    JSON text; any other ``arguments`` or a missing name is kept as it is for the validator to
    reject (arguments ``""``, name ``""``): one bad call must not cost the whole round.
    """
    try:
        data: Any = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise LlmBadResponse("mana-llm returned invalid JSON") from exc
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise LlmBadResponse("mana-llm response has no choices")
    first = choices[0]
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        message = {}
    content = message.get("content")
    if content is None:
        content = ""
    elif not isinstance(content, str):
        raise LlmBadResponse("mana-llm content is not a string")
    raw_calls = message.get("tool_calls")
    if raw_calls is not None and not isinstance(raw_calls, list):
        raise LlmBadResponse("mana-llm tool_calls is not a list")
    calls = tuple(_tool_call(raw, index) for index, raw in enumerate(raw_calls or ()))
    answer = set_aside_reasoning(content)  # an unclosed block: the answer never came ("")
    finish = first.get("finish_reason") if isinstance(first, dict) else None
    usage = data.get("usage")
    model = data.get("model")
    return AssistantTurn(
        content=answer.text,
        tool_calls=calls,
        finish_reason=finish if isinstance(finish, str) else "stop",
        prompt_tokens=_token_count(usage, "prompt_tokens"),
        completion_tokens=_token_count(usage, "completion_tokens"),
        model=model if isinstance(model, str) else requested_model,
        attempts=attempts,
        reasoning_chars=_reasoning_field_chars(message) + answer.reasoning_chars,
    )


def _tool_call(raw: object, index: int) -> RawToolCall:
    call: dict[str, Any] = raw if isinstance(raw, dict) else {}
    function = call.get("function")
    fn: dict[str, Any] = function if isinstance(function, dict) else {}
    call_id, name, arguments = call.get("id"), fn.get("name"), fn.get("arguments")
    if isinstance(arguments, dict):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return RawToolCall(
        id=call_id if isinstance(call_id, str) and call_id else f"call_{index}",
        name=name if isinstance(name, str) else "",
        arguments=arguments if isinstance(arguments, str) else "",
    )


def _encode(request: Mapping[str, object]) -> bytes:
    """UTF-8 JSON, as fetch sends it; a lone surrogate (not UTF-8 encodable) is escaped instead."""
    try:
        return json.dumps(request, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(request).encode()  # \ud800 escapes, like JSON.stringify


# --- the client -----------------------------------------------------------------------------


class LlmClient:
    """Chat completions from mana-llm: one bounded attempt at a time, retried with backoff.

    The limiter (the LLM slots, shared fairly between users) is held only while a request is in
    flight, never during a backoff sleep or between the tool planner's rounds; the wait for it
    is not part of an attempt's ``timeout_s`` (each holder is itself bounded).
    """

    def __init__(
        self,
        http: H11Client,
        *,
        base_url: str,
        api_key: str | None,
        model: str,
        timeout_s: float,
        retries: int,
        limiter: FairSlots,
        observe_duration: Callable[[float], None] = lambda s: None,
        on_retry: Callable[[str], None] = lambda reason: None,
        max_response_bytes: int = 1_048_576,
        max_tokens: int | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 10.0,
        random: Callable[[], float] = random.random,
    ) -> None:
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError(f"timeout_s must be a positive number, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if max_response_bytes < 1:
            raise ValueError(f"max_response_bytes must be >= 1, got {max_response_bytes}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
        if backoff_base_s < 0 or backoff_max_s < 0:
            raise ValueError("backoff_base_s and backoff_max_s must be >= 0")
        self._http = http
        url = chat_completions_url(base_url)
        self._endpoint = Endpoint.from_url(url)
        self._shown_url = safe_url(url)  # what error messages may say
        self._headers = [(b"accept", b"application/json"), (b"accept-encoding", b"gzip, deflate"),
                         (b"content-type", b"application/json")]
        if api_key is not None:  # mana-llm checks X-API-Key when its own key is set
            self._headers += [(b"authorization", f"Bearer {api_key}".encode()), (b"x-api-key", api_key.encode())]
        self._model = model
        self._timeout_s = timeout_s
        self._retries = retries
        self._limiter = limiter
        self._closed = False
        self._failures = 0
        self._last_success_at: float | None = None
        self._last_error: str | None = None
        self._waiting: set[trio.CancelScope] = set()  # calls waiting for the limiter
        self._observe_duration = observe_duration
        self._on_retry = on_retry
        self._max_response_bytes = max_response_bytes
        self._max_tokens = max_tokens
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._random = random
        # whether requests may go out (the LLM circuit is closed; set by the runtime): checked
        # before each try, also a retry's, and again after a wait for a slot
        self.admits: Callable[[], bool] = lambda: True

    def waiting_users(self) -> list[WaitingUser]:
        """Who waits for an LLM slot now, and for how long (the console's overview)."""
        return self._limiter.waiting_users()

    def health(self) -> LlmHealth:
        last_call: Literal["none", "ok", "failed"] = (
            "failed" if self._failures else "none" if self._last_success_at is None else "ok")
        return LlmHealth(self._failures == 0, self._failures, self._last_success_at, self._last_error, last_call)

    async def probe(self) -> None:
        """One tiny chat completion (``max_tokens`` 1), not retried: whether the LLM answers at
        all (the circuit breaker's probe). Raises an ``LlmError`` as ``complete`` does; any
        answer (a 4xx too) returns."""
        request = {"model": self._model, "temperature": 0,
                   "messages": [{"role": "system", "content": "Answer OK."}, {"role": "user", "content": "ping"}],
                   "max_tokens": 1}
        try:
            verdict = _judge(await self._attempt(_encode(request), _PROBE), self._shown_url, time.time())
            if isinstance(verdict, _Failed) and verdict.retry is not None:
                raise verdict.error from verdict.cause
        except LlmClosed:
            raise
        except LlmError as exc:
            self._count_failure(exc)
            raise
        self._count_success()

    async def complete(self, system: str, user: str, *, temperature: float = 0.3,
                       who: SlotKey = ANONYMOUS, response_format: Mapping[str, object] | None = None) -> Completion:
        """Post the chat completion; raises an ``LlmError`` when no usable answer came back.

        ``who`` (user, agent, due slot) places each attempt's wait for a slot in the fair order;
        ``response_format`` (planner/plan_schema.py) is sent when given."""
        request: ChatRequest = {
            "model": self._model,
            "temperature": temperature,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }
        if response_format is not None:
            request["response_format"] = response_format
        if self._max_tokens is not None:
            request["max_tokens"] = self._max_tokens
        return await self._tracked(_encode(request), parse_completion, who)

    async def chat_with_tools(self, messages: Sequence[Mapping[str, object]], tools: Sequence[Mapping[str, object]],
                              *, temperature: float = 0.3, who: SlotKey = ANONYMOUS) -> AssistantTurn:
        """One round of the tool-calling planner: ``messages`` and ``tools`` with
        ``tool_choice: "auto"``; the assistant message (text and tool calls) and the usage.

        Retries, timeouts, the limiter, ``close`` and ``health`` are those of ``complete``.
        """
        request: dict[str, object] = {"model": self._model, "temperature": temperature, "messages": list(messages),
                                      "tools": list(tools), "tool_choice": "auto"}
        if self._max_tokens is not None:
            request["max_tokens"] = self._max_tokens
        return await self._tracked(_encode(request), parse_assistant_turn, who)

    async def _tracked(self, payload: bytes, parse: Callable[[bytes, str, int], _T], who: SlotKey) -> _T:
        """Post and parse, with the health bookkeeping (an unusable answer is a failed call)."""
        try:
            body, attempts = await self._post(payload, who)
            result = parse(body, self._model, attempts)
        except (LlmClosed, LlmCircuitOpen):
            raise
        except LlmError as exc:
            self._count_failure(exc)
            raise
        self._count_success()
        return result

    def _count_failure(self, exc: LlmError) -> None:
        """Health bookkeeping: one more failed call in a row, and its (redacted) error."""
        self._failures += 1
        self._last_error = _health_error(exc)

    def _count_success(self) -> None:
        self._failures, self._last_success_at, self._last_error = 0, time.time(), None

    async def _post(self, payload: bytes, who: SlotKey) -> tuple[bytes, int]:
        """The 2xx body and the number of attempts it took."""
        attempt = 0
        while True:
            attempt += 1
            verdict = _judge(await self._attempt(payload, who), self._shown_url, time.time())
            if not isinstance(verdict, _Failed):
                return verdict, attempt
            if verdict.retry is None or attempt > self._retries:
                raise verdict.error from verdict.cause
            if verdict.retry_after_s is None:
                delay_s = backoff_s(attempt - 1, base_s=self._backoff_base_s,
                                    max_s=self._backoff_max_s, jitter=self._random())
            elif verdict.retry_after_s > self._backoff_max_s * 3:
                raise verdict.error  # the server asks for a pause longer than we wait
            else:
                delay_s = verdict.retry_after_s
            self._on_retry(verdict.retry)
            log.warning("llm.retrying", extra={"reason": verdict.retry, "attempt": attempt,
                                               "delay_s": round(delay_s, 3)})
            await trio.sleep(delay_s)

    def close(self) -> None:
        """Shutdown: start no new request (retries included); calls waiting for a slot of the
        limiter end at once with ``LlmClosed``. Requests in flight go on."""
        self._closed = True
        for scope in self._waiting:
            scope.cancel()

    async def _acquire(self, who: SlotKey) -> None:
        if self._closed:
            raise LlmClosed()
        if who is not _PROBE and not self.admits():
            raise LlmCircuitOpen()
        try:
            self._limiter.acquire_nowait(who)  # a free slot: no cancel scope (CPU) needed
            return
        except trio.WouldBlock:
            pass
        with trio.CancelScope() as waiting:
            if not self._closed:
                self._waiting.add(waiting)
                try:
                    await self._limiter.acquire(who)
                finally:
                    self._waiting.discard(waiting)
                if who is not _PROBE and not self.admits():  # the circuit opened while it waited
                    self._limiter.release()
                    raise LlmCircuitOpen()
                return
        raise LlmClosed()

    async def _attempt(self, payload: bytes, who: SlotKey) -> _Answered | _Unreached:
        """One request under the limiter and ``fail_after``; its duration is observed."""
        await self._acquire(who)
        try:
            started = trio.current_time()
            try:
                with trio.fail_after(self._timeout_s):
                    return await self._exchange(payload)
            except trio.TooSlowError as exc:
                raise LlmTimeout(f"mana-llm timed out after {self._timeout_s:g}s") from exc
            finally:
                self._observe_duration(trio.current_time() - started)
        finally:
            self._limiter.release()

    async def _exchange(self, payload: bytes) -> _Answered | _Unreached:
        responded = False
        try:
            async with self._http.stream(self._endpoint, self._headers, payload,
                                         read_timeout_s=self._timeout_s) as response:
                responded = True
                if not 200 <= response.status < 300:
                    body, _ = await response.read_up_to(_ERROR_TEXT_BYTES)
                else:
                    body = await _read_capped(response, self._max_response_bytes)
                return _Answered(response.status, response.header(b"retry-after"), body)
        except httpx.DecodingError as exc:
            raise LlmBadResponse(f"mana-llm response could not be decoded: {exc}") from exc
        except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
            # the socket was silent for the whole attempt's time: fail_after was about to fire
            raise LlmTimeout(f"mana-llm timed out after {self._timeout_s:g}s") from exc
        except httpx.TransportError as exc:
            if not responded:
                return _Unreached(exc)
            # the response began, then broke off: not retried (mana-llm may have done the work)
            raise LlmUnavailable(f"mana-llm unreachable at {self._shown_url}: {_describe(exc)}") from exc


def _health_error(exc: LlmError) -> str:
    return f"mana-llm {exc.status}" if isinstance(exc, LlmHttpError) else f"{type(exc).__name__}: {exc}"


async def models_probe(http: httpx.AsyncClient, base_url: str, api_key: str | None, *,
                       timeout_s: float = 5.0) -> str | None:
    """The start-up check: ``GET {base}/v1/models``; None when the LLM is reachable and took the
    key, else what went wrong (a status or a connection problem, never a body).

    A 404 or 405 counts as reachable: a server that has no model list (the built-in stand-in)
    still answers chat completions. 401 and 403 (the key), 429 and 5xx are failures."""
    url = chat_completions_url(base_url).removesuffix("/chat/completions") + "/models"
    headers = {} if api_key is None else {"authorization": f"Bearer {api_key}", "x-api-key": api_key}
    try:
        with trio.fail_after(timeout_s):
            response = await http.get(url, headers=headers)
    except trio.TooSlowError:
        return f"no answer from {safe_url(url)} within {timeout_s:g}s"
    except httpx.HTTPError as exc:
        return f"{safe_url(url)} unreachable: {_describe(exc)}"
    if response.status_code < 400 or response.status_code in (404, 405):
        return None
    return f"{safe_url(url)} answered {response.status_code}"


async def _read_capped(response: H11Response, limit: int) -> bytes:
    """The whole (decoded) body, or ``LlmBadResponse`` once it exceeds ``limit`` bytes."""
    too_large = LlmBadResponse(f"mana-llm response larger than {limit} bytes")
    declared = response.declared_length
    if declared is not None and declared > limit:  # checked before reading a byte of it
        raise too_large
    body, more = await response.read_up_to(limit)
    if more:
        raise too_large
    return body


