"""Multi-host tests: several simulated hosts (Linux namespaces) on this one machine; see ``rig.py``."""
