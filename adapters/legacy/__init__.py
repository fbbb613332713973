"""The demo federation's legacy systems and the adapter configurations that serve them.

:func:`build` generates every system's data; :func:`land_records_app` is the
SOAP service; :func:`config_path` names the packaged configurations
(``nadra``, ``plra``, ``lmc``, ``births``), which read the variables in
:attr:`LegacyDemo.variables` plus ``PLRA_SOAP_URL``.
"""

from adapters.legacy.land_records import land_records_app
from adapters.legacy.systems import CONFIGS, LegacyDemo, build, config_path

__all__ = ["CONFIGS", "LegacyDemo", "build", "config_path", "land_records_app"]
