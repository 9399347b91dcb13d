"""opsgate's open-model locustfile (``opsgate.slo.locustfile``); the plan comes in OPSGATE_SLO_SPEC."""

from opsgate.slo.locustfile import OpenModelUser

__all__ = ["OpenModelUser"]
