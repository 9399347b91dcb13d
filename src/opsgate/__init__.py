"""opsgate: executable runbooks — health gates, alert checks, failure drills and SLO load as pytest.

Importing opsgate starts, patches and reads nothing.
"""

from opsgate.config import Target, TargetError, load_target
from opsgate.environments.local import LocalEnvironment
from opsgate.waits import WaitTimeout, wait_until

__all__ = ["LocalEnvironment", "Target", "TargetError", "WaitTimeout", "load_target", "wait_until"]
__version__ = "0.1.0"
