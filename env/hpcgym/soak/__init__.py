"""Soak runs: many episodes through a real server, then a check of what the host kept."""
