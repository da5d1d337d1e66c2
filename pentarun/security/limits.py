"""Security bounds that pure modules check against. Pure: constants only, no I/O imports.

The modules that own these concepts (`stream_tokens` signs with jwt and reads its secret from
disk, `trust` reads and writes key files) import their bounds from here, so a pure core that
only needs a bound (`lanes/calls.py`, `gateway/params.py`) never pulls in jwt, cryptography
or file access.

    MAX_STREAM_TTL_S       the longest a stream token may live (24 h)
    TRUST_KEY_ID_PATTERN   a trusted publisher key's id (it names its file in the trust store)
"""

from __future__ import annotations

import re

MAX_STREAM_TTL_S = 24 * 3600

# Anchored with \Z, not $: `$` also matches before a trailing newline ("acme\n").
TRUST_KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z"
TRUST_KEY_ID = re.compile(TRUST_KEY_ID_PATTERN)
