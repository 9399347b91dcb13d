"""SLO load gates: Locust runs as a child process; verdicts are computed here from raw timings."""
