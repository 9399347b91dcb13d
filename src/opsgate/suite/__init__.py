"""The generic, target-driven suite that ``opsgate gate`` runs and ``checks/`` collects."""
