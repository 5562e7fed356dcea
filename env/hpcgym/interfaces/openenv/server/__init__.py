"""The OpenEnv server: the app, its settings and auth, and the per-session environment."""
