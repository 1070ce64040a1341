"""Redis state: key schema, the selection script, admin operations."""
