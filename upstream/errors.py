"""Errors raised by the network clients.

    LlmError                 base: mana-llm gave no usable answer (a ``planner.chat.ChatFailed``)
    ├── LlmUnavailable       the request never got a response (connect failed after retries)
    ├── LlmHttpError         a non-2xx status: ``mana-llm {status}: {text}`` (the TypeScript service's message)
    ├── LlmTimeout           one attempt used its whole ``timeout_s`` (not retried)
    ├── LlmBadResponse       a 2xx whose body is too large, not JSON, or has no usable choice
    └── LlmClosed            the client was closed (shutdown) before this request started

The research clients raise nothing for I/O: their failures are values (``ResearchFailed`` in
``upstream.research_client``, ``CallFailed`` in ``upstream.deep_research_client``).
"""

from __future__ import annotations

from planner.chat import ChatFailed

__all__ = ["ERROR_TEXT_CHARS", "LlmBadResponse", "LlmClosed", "LlmError", "LlmHttpError", "LlmTimeout",
           "LlmUnavailable"]

#: how much of a non-2xx answer's text an ``LlmHttpError`` keeps
ERROR_TEXT_CHARS = 500


class LlmError(ChatFailed):
    """mana-llm gave no usable answer."""


class LlmUnavailable(LlmError):
    """mana-llm could not be reached; see __cause__."""


class LlmHttpError(LlmError):
    """mana-llm answered with a non-2xx status."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body[:ERROR_TEXT_CHARS]
        super().__init__(f"mana-llm {status}: {self.body}")


class LlmTimeout(LlmError):
    """A mana-llm attempt did not finish within its time budget."""


class LlmClosed(LlmError):
    """The daemon is shutting down: no new mana-llm request is started."""


class LlmBadResponse(LlmError):
    """mana-llm answered 2xx with a body that is not a usable chat completion."""
