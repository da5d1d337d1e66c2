"""The wire between the core and plugin workers: messages, framing, channel."""
