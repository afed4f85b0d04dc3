"""The experiment registry: runs, their evaluations and statistics, in SQLite or PostgreSQL."""

from .engine import database_exists, resolve_url, safe_url
from .models import CANCELLED, DONE, FAILED, QUEUED, RUNNING, STATUSES
from .store import Claim, EnqueueResult, Registry, open_registry

__all__ = ["CANCELLED", "DONE", "FAILED", "QUEUED", "RUNNING", "STATUSES", "Claim", "EnqueueResult", "Registry",
           "database_exists", "open_registry", "resolve_url", "safe_url"]
