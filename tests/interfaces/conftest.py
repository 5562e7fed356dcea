"""Tests of the interfaces (gymnasium, OpenEnv, the CLI, the one loop behind them)."""
