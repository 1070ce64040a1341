"""smtp-balancer: the shared engine behind the policy daemon, the milter and the CLI."""

__version__ = "0.1.0"
