"""The `wsproxy` command: `main` parses the subcommand, `serve` runs the engine, the rest steer a running one."""
