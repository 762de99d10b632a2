"""Test support shipped for embedders: the backend contract suite, Hypothesis
strategies for run configs, and importable example flows.
"""
