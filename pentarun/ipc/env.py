"""The environment a worker process is started with: part of the protocol (docs/protocol.md),
shared by the core (which sets it) and the worker SDK (which reads it). Pure constants."""

IPC_FD_ENV = "PENTARUN_IPC_FD"  # the inherited Unix socket carrying the channel
MAX_FRAME_ENV = "PENTARUN_MAX_FRAME"  # the largest frame payload either side may send

# The egress lane (docs/protocol.md, "Egress"): the core's proxy for this plugin is the Unix
# socket at EGRESS_SOCKET_ENV; the SDK relays 127.0.0.1:EGRESS_PORT_ENV to it ("0": any free
# port, and the SDK sets the proxy variables itself). In the sandbox the socket is mounted at
# SANDBOX_EGRESS_SOCKET and the relay listens on SANDBOX_EGRESS_PORT (the worker's network
# namespace is its own, so the port is always free there).
EGRESS_SOCKET_ENV = "PENTARUN_EGRESS_SOCKET"
EGRESS_PORT_ENV = "PENTARUN_EGRESS_PORT"
SANDBOX_EGRESS_SOCKET = "/run/pentarun/egress.sock"
SANDBOX_EGRESS_PORT = 3128
PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
