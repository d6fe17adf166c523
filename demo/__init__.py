"""`mana-ai demo`: the whole loop on a throwaway embedded PostgreSQL, printed as it happens.

Seeds one user's agents, missions and encrypted notes into `sync_changes` the way the webapp's
devices would (`demo/seeds.py`), answers planning calls with a stand-in LLM on loopback that
proposes each mission's prepared plan (`demo/stand_in_llm.py`), runs one cycle with the daemon's
runtime, and prints the cycle's TickStats, every plan written back, the decrypt audit and why each
mission is (not) due afterwards. Nothing outside a temporary directory is touched.
"""

from __future__ import annotations

from demo.run import run_demo

__all__ = ["run_demo"]
