"""A plugin whose worker dies before the handshake, every time."""

import sys

sys.exit(3)
