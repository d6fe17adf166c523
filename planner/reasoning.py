"""Reasoning output set aside before the answer is read (pure; a deviation from the reference).

Reasoning models (Qwen3, DeepSeek-R1 and others, served by Ollama, vLLM or llama.cpp) write
their thinking before the answer, in the content as ``<think>…</think>`` (also ``<thinking>``,
``<reasoning>``), or in a ``reasoning_content``/``reasoning`` field of the message. A thinking
model often drafts the plan there first, fenced like the real one; the reference's parser
would take the first fenced block, that draft. Here:

* reasoning blocks at the start of the content (after whitespace, any number of them, tag
  names in any case) are set aside, and the answer is what follows the last one;
* without such a block, a closing tag with no opening one before it ends the reasoning too
  (chat templates that open the block in the prompt, DeepSeek-R1's and Qwen3's thinking
  models, send only ``…</think>`` before the answer), unless the content starts as an answer
  does (``{`` or a fence): then a closing tag is the answer's own text;
* a block opened at the start and never closed means the answer never came (the model stopped
  while thinking): the parser reports ``UNCLOSED_REASON``, never a draft found inside;
* tags anywhere else (inside the answer's JSON strings, say) are the answer's own text.

The ``reasoning_content`` field is never read as the answer (the LLM client only measures
it). Of the reasoning only its length is kept (``Answer.reasoning_chars``): it may echo the
user's data, so it is never stored or logged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from planner._js import JS_WHITESPACE

__all__ = ["Answer", "REASONING_TAGS", "UNCLOSED_REASON", "set_aside_reasoning"]

REASONING_TAGS = ("think", "thinking", "reasoning")

#: The parse failure of an answer that opened a reasoning block and never closed it.
UNCLOSED_REASON = "reasoning never ended: <{tag}> without </{tag}>, no answer after it"

_TAGS = "|".join(REASONING_TAGS)
_OPENING = re.compile(r"[" + re.escape(JS_WHITESPACE) + r"]*<(" + _TAGS + r")>", re.IGNORECASE)
_ANY_CLOSING = re.compile(r"</(?:" + _TAGS + r")>", re.IGNORECASE)
_ANY_OPENING = re.compile(r"<(?:" + _TAGS + r")>", re.IGNORECASE)
_CLOSING = {tag: re.compile("</" + tag + ">", re.IGNORECASE) for tag in REASONING_TAGS}


@dataclass(frozen=True, slots=True)
class Answer:
    """The content with its reasoning set aside.

    ``text`` is the answer to read; ``reasoning_chars`` how many characters were set aside;
    ``unclosed`` the tag of a block that was opened and never closed (``text`` is then "").
    """

    text: str
    reasoning_chars: int = 0
    unclosed: str | None = None

    @property
    def unclosed_reason(self) -> str | None:
        return None if self.unclosed is None else UNCLOSED_REASON.format(tag=self.unclosed)


def set_aside_reasoning(content: str) -> Answer:
    """``content`` without the reasoning before its answer (see the module's rules)."""
    if "<" not in content:  # the common answer without any tag: nothing to scan
        return Answer(content)
    position = 0
    while (opening := _OPENING.match(content, position)) is not None:
        tag = opening.group(1).lower()
        closing = _CLOSING[tag].search(content, opening.end())
        if closing is None:
            return Answer("", len(content), tag)
        position = closing.end()
    if position == 0 and not content.lstrip(JS_WHITESPACE).startswith(("{", "```")):  # not an answer already
        closing = _ANY_CLOSING.search(content)
        if closing is not None and _ANY_OPENING.search(content, 0, closing.start()) is None:
            position = closing.end()
    if not position:
        return Answer(content)
    answer = content[position:].lstrip(JS_WHITESPACE)  # the blank lines after the block go with it
    return Answer(answer, len(content) - len(answer))
