"""The reload state machine: planner (pure), journal, lock, engine, and the hosts it acts on."""
