"""smtp-balancer: the shared engine behind the policy daemon, the milter and the CLI."""

from pathlib import Path

from smtp_balancer.native import guard

__version__ = "0.1.0"

# before any submodule: a compiled module runs only while it matches its source
COMPILED = guard(Path(__file__).resolve().parent.parent)
