"""Meridian's fault harness: test hosts (hosts.py), workloads and their checkers."""
