"""Every package's tables in one metadata, for Alembic and for tests.

The composition root is the only place that knows all packages; each package
owns its own ``models.py`` and its own migration chain in
``alembic/versions/<package>/``.
"""

# Each import is for its tables only.
import adapters.models  # noqa: F401
import audit.models  # noqa: F401
import consent.models  # noqa: F401
import exchange.models  # noqa: F401
import registry.models  # noqa: F401
from core.db import Base
from registry.schemareg import models as schemareg_models  # noqa: F401

metadata = Base.metadata

__all__ = ["metadata"]
