"""The feedback daemon: delivery outcomes from the MTA log, DNSBL checks and relay probes."""
