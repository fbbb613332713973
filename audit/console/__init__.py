"""The regulator console: accounts, entry verification and the web pages under ``/console/``."""
