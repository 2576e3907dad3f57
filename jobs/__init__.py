"""Job entrypoints and the `quanyu` CLI. The only layer that knows about Ray addresses,
scheduling, environment variables and where things live on disk."""
