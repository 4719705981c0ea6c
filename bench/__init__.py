"""Benchmarks of corral against PM2, Supervisor and Circus (not part of the test suite).

Run: .venv/bin/python -m bench [--quick] [--repeat N] [--only WORKLOAD] [--managers ...]
"""
