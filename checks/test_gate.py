"""Collects opsgate's generic, target-driven checks: ``pytest checks/ --target targets/staging.yaml``.

Without ``--target`` the embedded reference platform is started and checked. A team adds its own
checks beside this module, using the same fixtures (``target``, ``evidence``).
"""

from opsgate.suite.test_alerts import (
    test_alert_lint,
    test_alert_route,
    test_alert_routing,
    test_alert_rule,
    test_alert_severities,
    test_rules_applied,
)
from opsgate.suite.test_alerts_live import test_alert_live
from opsgate.suite.test_browser import test_browser
from opsgate.suite.test_diagnosis import test_diagnosis
from opsgate.suite.test_flows import test_flow
from opsgate.suite.test_freshness import test_freshness
from opsgate.suite.test_gates import test_gate
from opsgate.suite.test_health import test_datastore, test_datastore_connections, test_health, test_queue
from opsgate.suite.test_metrics import test_metric_labels

__all__ = [
    "test_alert_lint",
    "test_alert_live",
    "test_alert_route",
    "test_alert_routing",
    "test_alert_rule",
    "test_alert_severities",
    "test_browser",
    "test_datastore",
    "test_datastore_connections",
    "test_diagnosis",
    "test_flow",
    "test_freshness",
    "test_gate",
    "test_health",
    "test_metric_labels",
    "test_queue",
    "test_rules_applied",
]
