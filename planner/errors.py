"""Errors raised by the planner package.

    PlannerError            base: the planner could not do its job
    ├── ToolDriftError      the tool catalog and the proposable-name list disagree (startup)
    └── PolicyError         an agent's policy cannot be applied (becomes a mission error)

Expected outcomes are values, not exceptions: a bad LLM answer is a ``ParseFailure``.
"""

from __future__ import annotations


class PlannerError(Exception):
    """The planner could not produce a plan."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class ToolDriftError(PlannerError):
    """AI_AVAILABLE_TOOLS and AI_PROPOSABLE_TOOL_NAMES disagree."""


class PolicyError(PlannerError):
    """The agent's policy cannot be applied."""
