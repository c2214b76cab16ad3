"""Example third-party dream-bench plugins (installed by a test, discovered through entry points)."""
