"""Which declared expectations wait for the drill's traffic before they are judged."""

from __future__ import annotations

from opsgate.config import DrillExpect
from opsgate.drills.declared import judged_on_traffic


def test_counts_against_the_traffic_wait_for_it_and_other_expectations_do_not() -> None:
    waits = [
        {"traffic": {"status": [202]}},
        {"sql": "select count(*) from messages where id::text = any(%(id)s)", "op": ">", "value": 0},
        {"metric": {"name": "billing_webhook_total"}, "increase": True, "op": "==", "value": "accepted"},
        {"queue": "send-messages", "op": "<=", "value": "sent"},
    ]
    judged_now = [
        {"alert": "NotificationFailureRateHigh", "state": "firing", "within": "20m"},
        {"sql": "select count(*) from messages where status = 'queued'", "op": "==", "value": 0},
        {"queue": "send-messages", "op": ">", "value": 5},
    ]
    assert all(judged_on_traffic(DrillExpect.model_validate(spec)) for spec in waits)
    assert not any(judged_on_traffic(DrillExpect.model_validate(spec)) for spec in judged_now)
