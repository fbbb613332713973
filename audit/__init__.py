"""The tamper-evident audit trail: RFC 6962 Merkle logs, checkpoints, witness, export."""
