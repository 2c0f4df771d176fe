"""Local Kubernetes control plane for the end-to-end tier."""
