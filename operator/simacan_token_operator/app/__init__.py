"""The process: CLI, kopf handlers, health and metrics endpoints, the status command, logging."""
