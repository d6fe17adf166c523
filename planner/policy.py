"""Agent policy filter for the planner's tool list (the TypeScript service's ``filterToolsByAgentPolicy``).

A decision is ``auto``, ``propose`` or ``deny``; only ``deny`` removes a tool. Our one change:
callers pass ``allowed_tool_names(filtered)`` to the parser, so a denied tool is rejected
instead of merely hidden from the prompt (all the TypeScript service did).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from planner._js import js_truthy
from planner.errors import PolicyError
from planner.tools import Tool

__all__ = ["allowed_tool_names", "filter_tools_by_agent_policy"]


def filter_tools_by_agent_policy(tools: Sequence[Tool], policy: object) -> tuple[Tool, ...]:
    """Keep the tools the agent's raw JSON ``policy`` does not deny, in catalog order.

    Resolution per tool: ``policy.tools[name]``, else ``policy.defaultsByModule[module]``,
    else ``policy.defaultForAi``; each step only counts if its value is JS-truthy. A falsy
    policy (no agent, ``null``, ``""``, ``0``) means no filtering. Like the TypeScript service, a truthy
    policy without a ``tools`` map raises (the mission fails). Unlike it, we also raise for a
    truthy non-object policy and for a ``tools`` value that is not an object, which the
    TypeScript service would partly let through: a policy we cannot read must not widen the tool set.
    """
    if not js_truthy(policy):
        return tuple(tools)
    if not isinstance(policy, Mapping):
        raise PolicyError("agent policy is not an object")
    decisions = policy.get("tools")
    if not isinstance(decisions, Mapping):
        raise PolicyError("agent policy has no tools map")
    by_module = policy.get("defaultsByModule")
    module_defaults: Mapping[str, object] = by_module if isinstance(by_module, Mapping) else {}
    fallback = policy.get("defaultForAi")
    return tuple(t for t in tools if _decide(t, decisions, module_defaults, fallback) != "deny")


def _decide(
    tool: Tool,
    decisions: Mapping[object, object],
    module_defaults: Mapping[str, object],
    fallback: object,
) -> object:
    decision = decisions.get(tool.name)
    if js_truthy(decision):
        return decision
    module_decision = module_defaults.get(tool.module)
    if js_truthy(module_decision):
        return module_decision
    return fallback


def allowed_tool_names(tools: Iterable[Tool]) -> frozenset[str]:
    """The names of ``tools``: the parser's allowed set for an agent-filtered tool list."""
    return frozenset(t.name for t in tools)
