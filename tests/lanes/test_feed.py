import trio

from pentarun.lanes.feed import Feed


async def test_subscribers_get_events_and_a_slow_one_is_dropped():
    feed = Feed(buffer=3)
    async with feed.subscribe() as fast, feed.subscribe() as slow:
        assert feed.subscribers == 2
        for i in range(3):
            feed.publish({"type": "x", "n": i})
            assert (await fast.receive())["n"] == i
        feed.publish({"type": "x", "n": 3})  # slow never read: its buffer of 3 is full
        assert feed.subscribers == 1
        assert (await fast.receive())["n"] == 3
        assert [(await slow.receive())["n"] for _ in range(3)] == [0, 1, 2]
        with trio.fail_after(1):
            assert [e async for e in slow] == []  # then its stream ends; the client reconnects
    assert feed.subscribers == 0


async def test_observer_maps_records_to_feed_events():
    feed = Feed()
    async with feed.subscribe() as events:
        feed.observe("event", {"type": "quarantined", "plugin": "p", "reason": "r"})
        feed.observe("audit", {"type": "plugin.call", "plugin": "p"})  # not a security event
        feed.observe("audit", {"type": "security.core_call_refused", "plugin": "p"})
        first, second = await events.receive(), await events.receive()
    assert first["type"] == "plugin.quarantined" and first["reason"] == "r"
    assert second["type"] == "security.core_call_refused"
