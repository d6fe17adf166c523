"""The planner: tool catalog, policy filter, prompt builders, strict parser, iteration shape,
function schemas and tool-call validation (the tool loop itself is ``planner.tool_loop``, the
shapes of its chat rounds ``planner.chat``).

Everything here is pure: no socket, no clock, no logging. Values come in as arguments (``now``
as an ISO string, the model's answer as an ``AssistantTurn``, the LLM round and the budget as
injected callables); the network clients that fetch them live in ``upstream/``, and
``tests/test_import_graph.py`` keeps this package from importing anything effectful.
Importing the package runs the tool drift guard, which raises ``ToolDriftError`` if the
catalog and the proposable names disagree.
"""

from __future__ import annotations

from planner.actor_stamp import (
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
from planner.prompt_tools import build_tools_prompt, tools_system_prompt
from planner.reminders import Reminder, budget_reminder
from planner.schemas import FunctionSchema, tool_to_function_schema, tools_to_function_schemas
from planner.tool_calls import Accepted, Rejected, validate_tool_call
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
    "Accepted",
    "Actor",
    "AgentContext",
    "AiActor",
    "FunctionSchema",
    "ParseFailure",
    "Plan",
    "PlanStep",
    "PlannerError",
    "PlannerMessages",
    "PolicyError",
    "PromptMission",
    "Rejected",
    "Reminder",
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
    "budget_reminder",
    "build_planner_prompt",
    "build_tools_prompt",
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
    "tool_to_function_schema",
    "tools_system_prompt",
    "tools_to_function_schemas",
    "validate_tool_call",
    "with_agent_context",
]
