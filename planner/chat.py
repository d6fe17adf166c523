"""One round of the tool-calling chat as the pure loop sees it: the model's answer, or its failure.

An ``AssistantTurn`` (its tool calls each a ``RawToolCall``) is what a ``Chat`` returns for one
round; ``ChatFailed`` is what it raises when no usable answer came back, which ends the loop
with what was recorded so far. The LLM client (``upstream.llm``) builds these values from
mana-llm's answers, and every error it raises (``upstream.errors.LlmError``) is a ``ChatFailed``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AssistantTurn", "ChatFailed", "RawToolCall"]


class ChatFailed(Exception):
    """The model gave no usable answer."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


@dataclass(frozen=True)
class RawToolCall:
    """A tool call as the model sent it; ``arguments`` is the JSON text, unparsed."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class AssistantTurn:
    """The assistant message of one tool-calling round and the usage it reported.

    ``content`` is the answer with the reasoning before it set aside (``planner.reasoning``).
    """

    content: str
    tool_calls: tuple[RawToolCall, ...]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    attempts: int
    reasoning_chars: int = 0  # reasoning set aside (think blocks, reasoning_content): its length only
