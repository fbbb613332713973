"""The gateway (X-Road's security server): the r1 REST protocol towards local systems,
signed envelopes over mutual TLS between gateways, and the provider pipeline."""
