"""Alert rules: tests at the boundaries, conformance, live firing."""
