"""Server backends: flows run by Docker or Kubernetes agents of a Prefect 1 Server."""
