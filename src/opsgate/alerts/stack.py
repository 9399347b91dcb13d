"""Configuration of the local alerting stack: Prometheus (1 s scrapes, compressed rules) and Alertmanager.

Alertmanager's own timers are compressed too: ``group_wait: 0s``, ``group_interval: 1s`` (0 is
refused). Critical, SEV-1 and SEV-2 alerts route to the ``paging`` receiver, info to ``info``, the rest to
``chat``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from opsgate.alerts.compress import Clamp, compress_rules

SCRAPE_INTERVAL_S = 1.0
PAGING_SEVERITIES = "critical|sev1|sev2"


def compressed_rules(
    sources: list[Path], factor: float, out: Path, *, defects: frozenset[str] = frozenset()
) -> list[Clamp]:
    """Merge the rule files into ``out``, time-compressed by ``factor``; returns the windows that hit a floor.

    ``defects`` plant deployment bugs: ``deployed-rules-missing-billing`` leaves the billing group out (a
    PrometheusRule not applied), ``alert-annotations-dropped`` deploys the rules without their annotations.
    """
    groups: list[dict[str, Any]] = []
    for path in sources:
        groups += (yaml.safe_load(path.read_text()) or {}).get("groups", [])
    if "deployed-rules-missing-billing" in defects:
        groups = [g for g in groups if g.get("name") != "billing"]
    if "alert-annotations-dropped" in defects:
        groups = [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g.get("rules", [])]}
                  for g in groups]  # fmt: skip
    result = compress_rules({"groups": groups}, factor, scrape_interval_s=SCRAPE_INTERVAL_S)
    out.write_text(yaml.safe_dump(result.groups, sort_keys=False, width=200))
    return list(result.clamps)


def prometheus_config(scrape_urls: list[str], alertmanager: str, rule_file: Path) -> str:
    """prometheus.yml: scrape every endpoint each second, evaluate each second, alert to ``alertmanager``."""
    targets = [url.removeprefix("http://").split("/", 1)[0] for url in scrape_urls]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(rule_file)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.removeprefix("http://")]}]}]},
        "scrape_configs": [{"job_name": "target", "static_configs": [{"targets": targets}]}],
    }
    return yaml.safe_dump(config, sort_keys=False)


def alertmanager_config(receiver_url: str, *, defects: frozenset[str] = frozenset()) -> str:
    """alertmanager.yml: paging for critical/SEV-1/SEV-2, info for info, chat for the rest (webhooks to the receiver).

    The defect ``alertmanager-info-unrouted`` leaves the info route out (info alerts fall through to chat).
    """

    def webhook(name: str) -> dict[str, Any]:
        return {"name": name, "webhook_configs": [{"url": f"{receiver_url}/{name}", "send_resolved": True}]}

    config = {
        "route": {
            "receiver": "chat",
            "group_by": ["alertname"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
            "routes": [
                {"receiver": "paging", "matchers": [f'severity=~"{PAGING_SEVERITIES}"']},
                *(
                    []
                    if "alertmanager-info-unrouted" in defects
                    else [{"receiver": "info", "matchers": ['severity="info"']}]
                ),
            ],
        },
        "receivers": [webhook("paging"), webhook("chat"), webhook("info")],
    }
    return yaml.safe_dump(config, sort_keys=False)
