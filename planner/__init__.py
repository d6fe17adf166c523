"""The planner: tool catalog, policy filter, prompt builder, strict parser, iteration shape.

Everything here is pure (no I/O, no clock, no logging). Importing the package runs the tool
drift guard, which raises ``ToolDriftError`` if the catalog and the proposable names disagree.
"""

from __future__ import annotations

from planner.actor import (
    LEGACY_AI_DISPLAY_NAME,
    LEGACY_AI_PRINCIPAL,
    LEGACY_DISPLAY_NAME,
    LEGACY_SYSTEM_PRINCIPAL,
    LEGACY_USER_PRINCIPAL,
    SYSTEM_MIGRATION,
    SYSTEM_MISSION_RUNNER,
    SYSTEM_PROJECTION,
    SYSTEM_RULE,
    SYSTEM_STREAM,
    USER_ACTOR,
    Actor,
    AiActor,
    SystemActor,
    UserActor,
    is_ai_actor,
    is_from_mission_runner,
    is_system_actor,
    is_user_actor,
    make_agent_actor,
    make_system_actor,
    make_user_actor,
    mission_runner_actor,
    normalize_actor,
)
from planner.errors import PlannerError, PolicyError, ToolDriftError
from planner.iteration import (
    ServerIteration,
    ServerPlanStep,
    ToolCallIntent,
    iso_ms,
    plan_to_iteration,
)
from planner.parse import ParseFailure, Plan, PlanStep, parse_planner_response
from planner.policy import allowed_tool_names, filter_tools_by_agent_policy
from planner.prompt import (
    AgentContext,
    PlannerMessages,
    PromptMission,
    ResolvedInput,
    build_planner_prompt,
    with_agent_context,
)
from planner.tools import (
    AI_AVAILABLE_TOOL_NAMES,
    AI_AVAILABLE_TOOLS,
    AI_PROPOSABLE_TOOL_NAMES,
    Tool,
    ToolParam,
    check_tool_drift,
)

__all__ = [
    "AI_AVAILABLE_TOOLS",
    "AI_AVAILABLE_TOOL_NAMES",
    "AI_PROPOSABLE_TOOL_NAMES",
    "LEGACY_AI_DISPLAY_NAME",
    "LEGACY_AI_PRINCIPAL",
    "LEGACY_DISPLAY_NAME",
    "LEGACY_SYSTEM_PRINCIPAL",
    "LEGACY_USER_PRINCIPAL",
    "SYSTEM_MIGRATION",
    "SYSTEM_MISSION_RUNNER",
    "SYSTEM_PROJECTION",
    "SYSTEM_RULE",
    "SYSTEM_STREAM",
    "USER_ACTOR",
    "Actor",
    "AgentContext",
    "AiActor",
    "ParseFailure",
    "Plan",
    "PlanStep",
    "PlannerError",
    "PlannerMessages",
    "PolicyError",
    "PromptMission",
    "ResolvedInput",
    "ServerIteration",
    "ServerPlanStep",
    "SystemActor",
    "Tool",
    "ToolCallIntent",
    "ToolDriftError",
    "ToolParam",
    "UserActor",
    "allowed_tool_names",
    "build_planner_prompt",
    "check_tool_drift",
    "filter_tools_by_agent_policy",
    "is_ai_actor",
    "is_from_mission_runner",
    "is_system_actor",
    "is_user_actor",
    "iso_ms",
    "make_agent_actor",
    "make_system_actor",
    "make_user_actor",
    "mission_runner_actor",
    "normalize_actor",
    "parse_planner_response",
    "plan_to_iteration",
    "with_agent_context",
]
