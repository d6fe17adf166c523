"""`mana-ai demo`: the whole loop on a throwaway embedded PostgreSQL, printed as it happens.

Seeds one user's agents and missions into `sync_changes` the way the webapp's devices would,
answers planning calls with a built-in stand-in LLM on loopback, runs one cycle, and prints the
cycle's TickStats, every written-back iteration and why each mission is (not) due afterwards.
Nothing outside a temporary directory is touched.
"""

from __future__ import annotations

from demo.run import run_demo

__all__ = ["run_demo"]
