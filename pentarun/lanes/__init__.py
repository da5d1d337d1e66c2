"""The lanes through which workers reach PentaVision: core calls, events, hooks, egress."""
