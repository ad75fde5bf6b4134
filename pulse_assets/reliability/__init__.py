"""Recovery from failures outside the code: killed processes, crashed runs."""
