"""Faults: actions with their undo, journalled before they are applied, rolled back on every exit path."""
