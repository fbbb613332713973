"""JSON Schema documents shipped with Shahrah, and a loader for them."""
