"""The citizen portal: server-rendered pages of the consent service (see docs/consent.md)."""

from consent.portal.pages import PREFIX, TIMELINE, build_console

__all__ = ["PREFIX", "TIMELINE", "build_console"]
