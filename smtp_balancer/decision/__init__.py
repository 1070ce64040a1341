"""The decision core, sans I/O: facts, rules, providers, warm-up, plans, the one weighted choice."""
