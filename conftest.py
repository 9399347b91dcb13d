"""Suite-level fixtures shared by checks/, chaos/ and load/.

The opsgate pytest plugin (``opsgate.plugin``, loaded through its entry point) provides the
session fixtures: ``target``, ``local_environment``, ``opsgate_run_dir``. Team-specific fixtures
for the repository's own checks and drills go here.
"""
