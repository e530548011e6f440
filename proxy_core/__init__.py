"""wsproxy's engine: a load-balancing TCP/WebSocket reverse proxy with health checks and a control API."""

__version__ = "0.1.0"
