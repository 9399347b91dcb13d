"""How a target comes to exist: local processes, testcontainers, or an external system."""
