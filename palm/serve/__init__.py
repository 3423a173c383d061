"""The serving side: services and their user functions, the serial server,
the master and its workers, and the stream routing of chains and pipelines."""
