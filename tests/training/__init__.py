"""Tests of training/: the TRL environment, dataset rows, and GRPO steps end to end."""
