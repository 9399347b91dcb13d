"""Failure drills: steady state → fault → expectations → rollback → expectations after, on a timeline."""
