"""The environment a worker process is started with: part of the protocol (docs/protocol.md),
shared by the core (which sets it) and the worker SDK (which reads it). Pure constants."""

IPC_FD_ENV = "PENTARUN_IPC_FD"  # the inherited Unix socket carrying the channel
MAX_FRAME_ENV = "PENTARUN_MAX_FRAME"  # the largest frame payload either side may send
