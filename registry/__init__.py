"""The central registry: members, gateways, keys, services, access rights, and the signed
global configuration that gateways run on (X-Road's central server)."""
