"""pentarun: the plugin runtime of the PentaVision video-surveillance platform."""

__version__ = "0.1.0"
