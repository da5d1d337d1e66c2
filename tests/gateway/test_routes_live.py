"""The console's camera previews are counted from the answer on, and every count comes back."""

import gc
import weakref

from pentarun.gateway.routes_live import _Previews


def test_a_lease_is_given_back_once_whatever_ends_it():
    previews = _Previews()
    first, second = previews.lease(), previews.lease()
    assert previews.open == 2  # counted when answered: a burst cannot all pass the check
    first()
    first()  # the stream's end and its finalizer may both give it back: once counts
    assert previews.open == 1

    async def never_read():
        yield b""

    stream = never_read()
    weakref.finalize(stream, second)
    del stream  # the client went away before the body was sent
    gc.collect()
    assert previews.open == 0
