"""Operator tokens for the consent service's operator API (guardianships).

The registry's scheme (:class:`registry.tokens.TokenStore`) on the consent
service's own table: the service is run by the federation operator but keeps
its own tokens, so a registry token opens nothing here.
"""

from __future__ import annotations

from consent import models as m
from registry.tokens import TokenStore

__all__ = ["TOKEN_PREFIX", "tokens"]

TOKEN_PREFIX = "shr_cop_"  # noqa: S105 (a recognisable prefix for secret scanners)

tokens = TokenStore(m.OperatorToken, TOKEN_PREFIX)
