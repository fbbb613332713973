"""Citizens' consent: signed artefacts, their lifecycle, and decisions gateways enforce.

Gateways use :class:`consent.client.ConsentClient` (``decide``, ``pseudonym``) with
:class:`consent.rules.DecisionQuery` and :class:`consent.rules.Permit`; a denial is
:class:`consent.rules.ConsentDenied`. The service itself is :mod:`consent.server`;
docs/consent.md describes it all.
"""
