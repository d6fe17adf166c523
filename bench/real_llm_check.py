"""Does the daemon get plans out of a real OpenAI-compatible server? A check anyone can run.

    python bench/real_llm_check.py --base-url http://127.0.0.1:8085 --model smollm2
        [--planner json|tools ...] [--format none|json_object|json_schema|json_object_schema ...]
        [--missions N] [--timeout 120] [--max-tokens N] [--llm-retries 0] [--api-key-env LLM_API_KEY]
        [--json] [--json-out FILE]

For each planner mode (MANA_AI_PLANNER) and, for the JSON planner, each response format
(MANA_AI_LLM_RESPONSE_FORMAT, when this checkout has that setting; the tool-calling planner
runs once, shown as format `-`): a fresh throwaway database, the daemon as an operator starts
it (`python -m supervisor serve`, this checkout's code) pointed at the server, and one mission
at a time: its rows are written to `sync_changes` as the webapp syncs them (an agent whose
policy allows a few tools, the mission, its inputs: notes, tasks and a goal in plaintext,
read under a key grant as the webapp issues it), one `POST /internal/tick` plans it, and the
run ledger, the token ledger and the written-back iteration say how it went.

Per mission it prints: mode, format, mission, outcome (`planned (n steps)`, `empty plan`,
`parse failure: <reason>`, `timeout`, `error: <error>`), the tick's wall time, tokens
(prompt+completion, as the server reported them; `~` marks a timed-out call, which the token
ledger charges at the daemon's estimate) and the parsed plan, short. `--json` prints
the same rows as JSON instead (`--json-out FILE` writes them beside the table), with the
run ledger's whole last error.

The missions: two German and two English, written as users of the workbench write them
(`--missions N` takes the first N). Each mission gets one try (MANA_AI_MAX_ATTEMPTS=1: no
ledger retry) and MANA_AI_LLM_RETRIES=`--llm-retries` transport retries (default 0, so a 500
shows as it is). MANA_AI_LLM_TIMEOUT_S is `--timeout`; the tick may take the tool planner's
rounds times that. `--max-tokens` sets MANA_AI_LLM_MAX_TOKENS (unset: the TypeScript service's body).
An API key, when the server needs one, is read from the environment variable named by
`--api-key-env` (never from the command line, never printed) and given to the daemon as
MANA_AI_LLM_API_KEY.

PostgreSQL: an embedded throwaway server, or MANA_AI_BENCH_DSN (an admin DSN; a database
`real_llm_check_<pid>` is created and dropped on it). Exits 0 whatever the model answered; non-zero
only when the check itself could not run (the server unreachable, the daemon not starting, a
tick refused).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import trio  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from trio_asyncio import aio_as_trio  # noqa: E402

from bench._daemon import SERVICE_KEY, Daemon, running_daemon  # noqa: E402
from bench._harness import fresh_database, postgres  # noqa: E402
from grants.derive import Derivation, mint_grant  # noqa: E402
from settings import ConfigError, load_settings  # noqa: E402
from store.bridge import open_asyncio_bridge  # noqa: E402
from store.pool import close_pool, connect_with_retry  # noqa: E402
from upstream.llm import chat_completions_url  # noqa: E402

PLANNERS = ("json", "tools")
#: every value MANA_AI_LLM_RESPONSE_FORMAT may take; those this checkout's settings accept are run
FORMATS = ("none", "json_object", "json_schema", "json_object_schema")
FORMAT_SETTING = "MANA_AI_LLM_RESPONSE_FORMAT"
NO_FORMAT = "-"  # the tool-calling planner, or a checkout without the setting
DATABASE = f"real_llm_check_{os.getpid()}"
MASTER_KEY = bytes(range(1, 33))  # the user's master key in this throwaway world


# -- the missions (pure data) ---------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """An input record as the webapp syncs it (plaintext fields)."""

    app_id: str
    table: str
    id: str
    data: dict[str, Any]
    module: str  # how the mission's input names it

    @property
    def ref(self) -> dict[str, str]:
        return {"module": self.module, "table": self.table, "id": self.id}


@dataclass(frozen=True)
class CheckMission:
    id: str
    user: str
    title: str
    concept: str
    objective: str
    agent_name: str
    agent_role: str
    tools: tuple[str, ...]  # the agent's policy allows these (as proposals), denies the rest
    inputs: tuple[Record, ...] = ()


MISSIONS: tuple[CheckMission, ...] = (
    CheckMission(
        "de-wochenplan", "u-de", "Wochenplanung",
        "# Wochenplanung\nJeden Montag plane ich die Woche: Termine in den Kalender, Erledigungen als Aufgaben.",
        "Lege aus meiner Notiz die Aufgaben und Termine für die kommende Woche an",
        "Planer", "Plant Termine und Aufgaben", ("create_task", "create_event"),
        (Record("notes", "notes", "n-woche", {"id": "n-woche", "title": "Diese Woche", "content":
                "Montag 9 Uhr Zahnarzt (Dr. Weber). Steuererklärung bis Freitag abgeben. Mittwoch 19:30"
                " Elternabend in der Schule. Einkaufen: Milch, Brot, Kaffee."}, "notes"),)),
    CheckMission(
        "de-laufen", "u-de", "Lauftraining",
        "# Laufziel\nVier Läufe pro Woche. Ich laufe am liebsten morgens vor der Arbeit.",
        "Plane die Läufe, die mir diese Woche noch zum Ziel fehlen",
        "Coach", "Hilft beim Training", ("create_task", "create_event"),
        (Record("companion", "companionGoals", "g-laufen", {"id": "g-laufen", "title": "Laufen", "currentValue": 2,
                                                            "target": {"value": 4}, "period": "Woche"}, "goals"),
         Record("notes", "notes", "n-strecken", {"id": "n-strecken", "title": "Laufstrecken", "content":
                "Stadtpark-Runde 5 km, Rheinufer 8 km. Dienstag und Donnerstag habe ich morgens Zeit."},
                "notes"))),
    CheckMission(
        "en-lisbon", "u-en", "Lisbon trip",
        "# Trip prep\nEverything that must happen before the Lisbon trip in May.",
        "Prepare my trip to Lisbon: what to book, renew and plan",
        "Travel", "Organises trips", ("create_task", "create_event", "create_place"),
        (Record("notes", "notes", "n-lisbon", {"id": "n-lisbon", "title": "Lisbon", "content":
                "Flight TP 543 on 2026-05-14 at 10:20 from Berlin. Hotel not booked yet. Passport expires"
                " 2026-06-01, renew it! Want to see the Time Out Market and Belém Tower."}, "notes"),)),
    CheckMission(
        "en-review", "u-en", "Weekly review",
        "# Review\nEvery Friday: look at open tasks, close what is done, add what is missing.",
        "Review my open tasks: complete the ones that are done and add what is missing",
        "Reviewer", "Keeps the task list tidy", ("create_task", "complete_tasks_by_title"),
        (Record("todo", "tasks", "t-insurance", {"id": "t-insurance", "title": "Renew car insurance",
                                                  "status": "open", "dueDate": "2026-12-15"}, "todo"),
         Record("todo", "tasks", "t-landlord", {"id": "t-landlord", "title": "Call the landlord about the heating",
                                                 "status": "open", "description": "did it on Tuesday"}, "todo"),
         Record("notes", "notes", "n-friday", {"id": "n-friday", "title": "Friday", "content":
                "Called the landlord on Tuesday, heating is fixed. Still need a gift for Anna's birthday"
                " on the 20th."}, "notes"))),
)


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def mission_rows(m: CheckMission, public_key: rsa.RSAPublicKey, now: datetime) -> list[tuple[Any, ...]]:
    """`sync_changes` rows (app, table, record, user, data) for the agent, the inputs and the
    mission, in the order the webapp writes them; the mission is due since an hour."""
    agent_id = f"agent-{m.id}"
    rows: list[tuple[Any, ...]] = [("ai", "agents", agent_id, m.user, {
        "id": agent_id, "createdAt": _iso(now), "updatedAt": _iso(now), "name": m.agent_name, "role": m.agent_role,
        "state": "active", "maxConcurrentMissions": 1, "userId": m.user,
        "policy": {"tools": {name: "propose" for name in m.tools}, "defaultForAi": "deny"}})]
    rows += [(r.app_id, r.table, r.id, m.user, r.data) for r in m.inputs]
    encrypted_refs = [r for r in m.inputs if r.module != "goals"]  # read under the mission's grant
    derivation = Derivation(m.id, tuple(sorted({r.table for r in encrypted_refs})),
                            tuple(sorted(f"{r.table}:{r.id}" for r in encrypted_refs)))
    grant = mint_grant(public_key, MASTER_KEY, derivation, issued_at=now, expires_at=now + timedelta(days=7))
    rows.append(("ai", "aiMissions", m.id, m.user, {
        "id": m.id, "createdAt": _iso(now), "updatedAt": _iso(now), "title": m.title, "conceptMarkdown": m.concept,
        "objective": m.objective, "inputs": [r.ref for r in m.inputs], "iterations": [], "state": "active",
        "cadence": {"kind": "interval", "everyMinutes": 1440}, "nextRunAt": _iso(now - timedelta(hours=1)),
        "agentId": agent_id, "userId": m.user, "grant": grant}))
    return rows


# -- what came out (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    planner: str
    format: str
    mission: str
    outcome: str
    wall_s: float
    prompt_tokens: int | None
    completion_tokens: int | None
    plan: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # the run ledger's last error, whole (the outcome shortens it)

    @property
    def tokens(self) -> str:
        """As the server reported them; `~`: a timed-out call, charged at the daemon's estimate."""
        if self.prompt_tokens is None or self.completion_tokens is None:
            return "-"
        return f"{'~' if self.outcome == 'timeout' else ''}{self.prompt_tokens}+{self.completion_tokens}"


def describe_outcome(status: str | None, outcome: str | None, error: str | None, steps: int) -> str:
    """The ledger's verdict in a few words."""
    if status is None:
        return "not run"
    if status == "planned":
        return "empty plan" if outcome == "empty-plan" or steps == 0 else f"planned ({steps} steps)"
    if outcome == "parse-failed":
        return f"parse failure: {error}"
    if error and "timed out" in error:
        return "timeout"
    return f"error: {_short(error or outcome or status, 120)}"


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def short_plan(iteration: Mapping[str, Any] | None) -> tuple[str, list[dict[str, Any]]]:
    """`summary | tool(params), …` and the steps' intents, from a written-back iteration."""
    if not iteration:
        return "", []
    steps = [s.get("intent", {}) for s in iteration.get("plan", []) if isinstance(s, Mapping)]
    calls = ", ".join(f"{i.get('toolName')}({_short(json.dumps(i.get('params'), ensure_ascii=False), 60)})"
                      for i in steps)
    return _short(f"{iteration.get('summary', '')} | {calls}", 200), steps


def table(rows: Sequence[Row]) -> str:
    header = ("mode", "format", "mission", "outcome", "wall s", "tokens", "plan")
    cells = [header] + [(r.planner, r.format, r.mission, _short(r.outcome, 60), f"{r.wall_s:.1f}", r.tokens,
                         r.plan) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header) - 1)]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(widths))) + "  " + c[-1] for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(header[-1]))
    return "\n".join(line.rstrip() for line in lines)


def supported_formats() -> list[str]:
    """The response formats this checkout's settings accept (none when it has no such setting)."""
    found = []
    for value in FORMATS:
        try:
            load_settings({FORMAT_SETTING: value})
        except ConfigError:
            continue
        found.append(value)
    return found


def combinations(planners: Sequence[str], formats: Sequence[str], supported: Sequence[str]) -> list[tuple[str, str]]:
    """(planner, format) pairs to run: the JSON planner once per format, the tool planner once."""
    pairs: list[tuple[str, str]] = []
    for planner in planners:
        if planner == "json" and supported:
            pairs += [(planner, f) for f in formats if f in supported]
        else:
            pairs.append((planner, NO_FORMAT))
    return pairs


# -- running it -----------------------------------------------------------------------------


async def _execute_rows(pool: asyncpg.Pool, rows: list[tuple[Any, ...]]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany(
            "INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_timestamps,"
            " client_id, created_at) VALUES ($1, $2, $3, $4, 'insert', $5::text::jsonb, '{}', 'real-llm-check',"
            " now())", [(*r[:4], json.dumps(r[4])) for r in rows])


async def _read_result(pool: asyncpg.Pool, m: CheckMission) -> dict[str, Any]:
    async with pool.acquire() as conn:
        run = await conn.fetchrow(
            "SELECT status, outcome, last_error, iteration_id FROM mana_ai.mission_runs"
            " WHERE user_id = $1 AND mission_id = $2 ORDER BY created_at DESC LIMIT 1", m.user, m.id)
        usage = await conn.fetchrow(
            "SELECT count(*) AS n, sum(prompt_tokens) AS p, sum(completion_tokens) AS c FROM mana_ai.token_usage"
            " WHERE user_id = $1 AND mission_id = $2 AND status = 'used'", m.user, m.id)
        written = await conn.fetchval(
            "SELECT data FROM sync_changes WHERE client_id = 'mana-ai-runner' AND record_id = $1"
            " AND table_name = 'aiMissions' ORDER BY id DESC LIMIT 1", m.id)
    return {"run": dict(run) if run else None, "usage": dict(usage) if usage else None,
            "written": json.loads(written) if isinstance(written, str) else written}


def _iteration(written: Any, iteration_id: str | None) -> dict[str, Any] | None:
    iterations = written.get("iterations") if isinstance(written, dict) else None
    if not isinstance(iterations, list):
        return None
    found = [i for i in iterations if isinstance(i, dict) and i.get("id") == iteration_id]
    return found[-1] if found else None


async def _tick(client: httpx.AsyncClient, daemon: Daemon) -> dict[str, Any]:
    response = await client.post("/internal/tick", headers={"X-Service-Key": SERVICE_KEY})
    if response.status_code != 200:
        raise SystemExit(f"tick answered {response.status_code}: {response.text}\n{daemon.log_tail()}")
    body: dict[str, Any] = response.json()
    return body


def daemon_settings(args: argparse.Namespace, planner: str, fmt: str, pem: str) -> dict[str, str]:
    rounds = 5
    tries = (args.llm_retries + 1) * (rounds if planner == "tools" else 1)
    env = {"MANA_LLM_URL": args.base_url, "MANA_AI_LLM_MODEL": args.model, "MANA_AI_PLANNER": planner,
           "MANA_AI_PLANNER_MAX_ROUNDS": str(rounds), "MANA_AI_LLM_TIMEOUT_S": str(args.timeout),
           "MANA_AI_LLM_RETRIES": str(args.llm_retries), "MANA_AI_MAX_ATTEMPTS": "1",
           "MANA_AI_CYCLE_TIMEOUT_S": str(int(args.timeout * tries + 60)), "MANA_AI_PRIVATE_KEY_PEM": pem,
           "MANA_AI_LOG_LEVEL": "info"}
    if fmt != NO_FORMAT:
        env[FORMAT_SETTING] = fmt
    if args.max_tokens is not None:
        env["MANA_AI_LLM_MAX_TOKENS"] = str(args.max_tokens)
    key = os.environ.get(args.api_key_env)
    if key:
        env["MANA_AI_LLM_API_KEY"] = key
    return env


async def run_combination(admin_dsn: str, args: argparse.Namespace, planner: str, fmt: str,
                          missions: Sequence[CheckMission], workdir: Path) -> list[Row]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    dsn = await fresh_database(admin_dsn, DATABASE)
    rows: list[Row] = []
    instance = f"check-{planner}-{fmt}".replace("_", "-")
    async with running_daemon(dsn, args.base_url, workdir, instance, llm_concurrency=1, mailbox_size=32,
                              extra_env=daemon_settings(args, planner, fmt, pem)) as daemon:
        tick_timeout = args.timeout * (args.llm_retries + 1) * (5 if planner == "tools" else 1) + 120
        async with httpx.AsyncClient(base_url=daemon.url, timeout=tick_timeout) as client:
            await _tick(client, daemon)  # the cycle a daemon runs at start: nothing is due yet
            pool = await connect_with_retry(dsn, 2, 10)
            try:
                for m in missions:
                    await aio_as_trio(_execute_rows)(pool, mission_rows(m, key.public_key(), datetime.now(timezone.utc)))
                    started = time.monotonic()
                    await _tick(client, daemon)
                    wall_s = time.monotonic() - started
                    found = await aio_as_trio(_read_result)(pool, m)
                    rows.append(_row(planner, fmt, m, wall_s, found))
                    print(f"  {planner}/{fmt} {m.id}: {rows[-1].outcome} ({wall_s:.1f} s)", file=sys.stderr,
                          flush=True)
            finally:
                await close_pool(pool)
    await drop_database(admin_dsn, DATABASE)
    return rows


async def _drop(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    await aio_as_trio(_drop)(admin_dsn, name)


def _row(planner: str, fmt: str, m: CheckMission, wall_s: float, found: Mapping[str, Any]) -> Row:
    run, usage = found["run"], found["usage"]
    iteration = _iteration(found["written"], run["iteration_id"]) if run else None
    plan, steps = short_plan(iteration)
    used = usage is not None and usage["n"]
    return Row(planner, fmt, m.id,
               describe_outcome(run["status"] if run else None, run["outcome"] if run else None,
                                run["last_error"] if run else None, len(steps)),
               round(wall_s, 2), int(usage["p"]) if used else None, int(usage["c"]) if used else None, plan, steps,
               run["last_error"] if run else None)


async def reachable(base_url: str) -> str | None:
    """None when something answers HTTP at the completions endpoint's host, else why not."""
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            await client.get(chat_completions_url(base_url).removesuffix("/chat/completions") + "/models")
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def main(args: argparse.Namespace) -> list[Row]:
    problem = await reachable(args.base_url)
    if problem is not None:
        raise SystemExit(f"the server at {args.base_url} is not reachable: {problem}")
    supported = supported_formats()
    pairs = combinations(args.planner or list(PLANNERS), args.format or supported, supported)
    missions = MISSIONS[:args.missions]
    rows: list[Row] = []
    with postgres() as admin_dsn, tempfile.TemporaryDirectory(prefix="mana-ai-real-llm-") as tmp:
        async with open_asyncio_bridge():
            for planner, fmt in pairs:
                print(f"{planner} planner, format {fmt}: {len(missions)} missions", file=sys.stderr, flush=True)
                rows += await run_combination(admin_dsn, args, planner, fmt, missions, Path(tmp))
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True, help="the server's base URL (with or without /v1)")
    parser.add_argument("--model", required=True, help="the model name the server is asked for")
    parser.add_argument("--planner", action="append", choices=PLANNERS, help="repeatable; default: both")
    parser.add_argument("--format", action="append", choices=FORMATS,
                        help=f"repeatable; the JSON planner's {FORMAT_SETTING} values; default: every one this"
                             " checkout supports")
    parser.add_argument("--missions", type=int, default=len(MISSIONS), help=f"the first N of {len(MISSIONS)}")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per LLM call (MANA_AI_LLM_TIMEOUT_S)")
    parser.add_argument("--max-tokens", type=int, help="MANA_AI_LLM_MAX_TOKENS (default: unset)")
    parser.add_argument("--llm-retries", type=int, default=0, help="MANA_AI_LLM_RETRIES (default 0)")
    parser.add_argument("--api-key-env", default="LLM_API_KEY",
                        help="the environment variable holding the server's API key, if it needs one")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.add_argument("--json-out", type=Path, metavar="FILE", help="also write the rows as JSON to FILE")
    args = parser.parse_args(argv)
    if not 1 <= args.missions <= len(MISSIONS):
        parser.error(f"--missions must be between 1 and {len(MISSIONS)}")
    if args.timeout <= 0 or args.llm_retries < 0 or (args.max_tokens is not None and args.max_tokens < 1):
        parser.error("--timeout must be > 0, --llm-retries >= 0, --max-tokens >= 1")
    if not args.base_url.startswith(("http://", "https://")):
        parser.error("--base-url must be an http:// or https:// URL")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    result = trio.run(main, arguments)
    if arguments.json_out is not None:
        arguments.json_out.write_text(json.dumps([asdict(r) for r in result], indent=2, ensure_ascii=False))
    if arguments.json:
        print(json.dumps([asdict(r) for r in result], indent=2, ensure_ascii=False))
    else:
        print(table(result))
