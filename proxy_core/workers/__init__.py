"""`wsproxy serve --workers N`: N engine processes accept on the same ports (SO_REUSEPORT) under one supervisor.

The supervisor is the ordinary Engine without listeners: it keeps the registry, health checks, the control API,
the event bus and the state file, and pushes every pool change to the workers (`supervisor.py`). Each worker
runs only the data path: listeners, a Switchboard and a replica registry (`worker.py`). They talk over one
socketpair each, length-prefixed orjson messages (`link.py`); the wire protocol is described there.
"""
