"""Collects opsgate's SLO load gates: ``pytest load/ --target targets/staging.yaml --opsgate-load full``.

Each row of the target file's ``slos:`` is one test. A team adds its own locustfiles beside this
module (see ``reference_journey.py``) and names them in an SLO row's ``locustfile:``.
"""

from opsgate.suite.test_slo import test_slo

__all__ = ["test_slo"]
