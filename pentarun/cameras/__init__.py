"""PentaVision data that plugins reach through the core: cameras and their frames."""
