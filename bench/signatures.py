"""Signing cost: Shahrah's canonicalise + typed JWS sign + verify of a typical exchange
envelope, against raw `cryptography` ES256 sign + verify of the same bytes (the library
overhead), and ES256 against EdDSA (the measurement behind docs/signatures.md).

    python -m bench.signatures [--ops N] [--rounds R]
"""

from __future__ import annotations

import argparse
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bench._timing import compare, table
from core import jws
from core.canonical import canonical_json
from core.keys import KeySet, PrivateKey

ENVELOPE = {
    "message_id": "6f1f9c5e-8a43-4c55-9d2b-3f1c2b8e7a10",
    "client": "PK/LG/LMC/property-tax",
    "service": "PK/FED/NADRA/civil-registry/person/v1",
    "method": "GET",
    "path": "/persons/35202-1234567-1",
    "query": "fields=name,address",
    "headers": {"accept": "application/json", "content-type": "application/json"},
    "body_sha256": "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU",
    "subject": "PK3520212345671",
    "purpose": "property-tax-assessment",
    "consent": "c-2026-000123",
    "time": "2026-11-28T10:15:30Z",
    "nonce": "pQ3kX9w2V7sYb1nR4tLm0A",
}
TYP = "shahrah-envelope+jws"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=500, help="operations per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    key = PrivateKey.generate()
    trusted = KeySet([key.public()])
    raw_priv, raw_pub = key.cryptography_key, key.public().cryptography_key
    data = canonical_json(ENVELOPE)
    ecdsa = ec.ECDSA(hashes.SHA256())

    def shahrah() -> None:
        payload = canonical_json(ENVELOPE)
        token = jws.sign(payload, key, typ=TYP, detached=True)
        jws.verify(token, trusted, typ=TYP, payload=payload)

    def raw() -> None:
        raw_pub.verify(raw_priv.sign(data, ecdsa), data, ecdsa)

    results = compare(
        {
            "shahrah canonical+JWS ES256 sign+verify": shahrah,
            "raw cryptography ES256 sign+verify": raw,
        },
        ops=args.ops,
        rounds=args.rounds,
    )
    print(
        table(
            f"Envelope of {len(data)} bytes, {os.cpu_count()} CPUs",
            results,
            baseline="raw cryptography ES256 sign+verify",
        )
    )
    print()

    ed = ed25519.Ed25519PrivateKey.generate()
    ed_pub = ed.public_key()
    ed_sig = ed.sign(data)
    es_sig = raw_priv.sign(data, ecdsa)
    algs = compare(
        {
            "ES256 sign": lambda: raw_priv.sign(data, ecdsa),
            "EdDSA (Ed25519) sign": lambda: ed.sign(data),
            "ES256 verify": lambda: raw_pub.verify(es_sig, data, ecdsa),
            "EdDSA (Ed25519) verify": lambda: ed_pub.verify(ed_sig, data),
        },
        ops=args.ops * 2,
        rounds=args.rounds,
    )
    print(table("Algorithm choice (raw cryptography)", algs, baseline="ES256 sign"))


if __name__ == "__main__":
    main()
