"""Episode -> OBSERVATION for users: the CLI now; gymnasium, OpenEnv and TRL as their issues land."""
