import asyncio

from bookshop import events


def test_publish_sequence_starts_after_purge(nats_url):
    seq = asyncio.run(events.publish_order(nats_url, 1, "ada"))
    assert seq >= 1
    assert asyncio.run(events.stream_size(nats_url)) == 1


def test_three_events_in_stream(nats_url):
    """A fixed stream name: another publisher on the same server changes the count."""
    for order_id in (1, 2, 3):
        asyncio.run(events.publish_order(nats_url, order_id, "bob"))
    assert asyncio.run(events.stream_size(nats_url)) == 3


def test_consumer_reads_what_was_published(nats_url):
    asyncio.run(events.publish_order(nats_url, 7, "cy"))
    asyncio.run(events.publish_order(nats_url, 8, "di"))
    got = asyncio.run(events.read_orders(nats_url, durable="mailer"))
    assert [e["order_id"] for e in got][-2:] == [7, 8]


def test_purge_empties_stream(nats_url):
    asyncio.run(events.publish_order(nats_url, 1, "ada"))
    asyncio.run(events.purge(nats_url))
    assert asyncio.run(events.stream_size(nats_url)) == 0
