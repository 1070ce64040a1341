"""A/B experiments on routing strategies: statistics and reports per arm."""
