"""Adapters that put legacy REST, SOAP, SQL and file-drop systems behind Shahrah services."""
