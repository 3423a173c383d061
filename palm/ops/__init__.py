"""Running palm: deployment files, local clusters, loading user classes,
and the processes palm starts and stops."""
