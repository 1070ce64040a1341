"""The smtp-balancer command line."""
