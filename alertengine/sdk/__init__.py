"""AlertEngine SDK: ``instrument(app)`` gives a Starlette / FastAPI / ASGI service a trustworthy ``/health/alerts``.

Owns: ``middleware`` (pure ASGI measurement and the health endpoint), ``monitor``, ``window``,
``histogram``, ``scoring`` and ``report`` (the health document).
May import: nothing of the appliance: services install the SDK on its own, beside Starlette.
"""

from .histogram import Histogram
from .middleware import DEFAULT_HEALTH_PATH, AlertEngineMiddleware, instrument
from .monitor import UNMATCHED, Monitor
from .report import SCHEMA_VERSION, HealthReport
from .scoring import Thresholds

__all__ = ["AlertEngineMiddleware", "DEFAULT_HEALTH_PATH", "HealthReport", "Histogram", "Monitor",
           "SCHEMA_VERSION", "Thresholds", "UNMATCHED", "instrument"]
