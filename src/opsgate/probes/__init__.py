"""Read-only observations of a target."""
