"""The Ray Serve application: HTTP API, model deployments, hot reload, planner page."""
