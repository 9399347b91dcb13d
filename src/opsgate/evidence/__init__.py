"""Evidence of a run: its directory, logs, JUnit, summary and report."""
