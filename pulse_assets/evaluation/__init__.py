"""Retrodiction: replaying history with the champion model (the plan's retrodiction engine)."""
