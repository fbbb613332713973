"""Every package's tables in one metadata, for Alembic and for tests.

The composition root is the only place that knows all packages; each package
owns its own ``models.py`` and its own migration chain in
``alembic/versions/<package>/``.
"""

import exchange.models  # noqa: F401  (imported for its tables)
import registry.models  # noqa: F401
from core.db import Base
from registry.schemareg import models as schemareg_models  # noqa: F401

metadata = Base.metadata

__all__ = ["metadata"]
