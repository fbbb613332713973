"""Citizens' consent: signed artefacts, their lifecycle, and decisions gateways enforce."""
