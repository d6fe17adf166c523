"""The runtime's actors and what they decide.

The snapshot actor runs the cycles (refresh, due selection, claims, dispatch); the agent registry
supervises one agent actor per (user, agent), which runs its missions through the mission runner;
the research desk parks missions while their deep-research jobs run; the lease keeper renews the
claims this instance holds; the janitor prunes old rows. Beside them: the pure decisions they
apply (gating, the "why (not) due" verdicts) and the messages they pass. `runtime.py` builds
them on an open pool; the process entry runs the snapshot actor's schedule and the janitor.
"""
