"""What outlives a message: the shared cache, the embedded Redis, central logs,
performance counters, and how a process joins its deployment's Redis."""
