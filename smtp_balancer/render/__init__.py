"""MTA configuration rendered from the YAML."""
