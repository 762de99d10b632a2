"""The local backend: Prefect 1 flows run on this machine."""
