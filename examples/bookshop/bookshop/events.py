"""Order events on a NATS JetStream stream."""

from __future__ import annotations

import asyncio
import json

import nats
from nats.js.api import StreamConfig

STREAM = "ORDERS"
SUBJECT = "orders.placed"


async def ensure_stream(url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=STREAM, subjects=["orders.*"]))
    finally:
        await nc.close()


async def publish_order(url: str, order_id: int, customer: str) -> int:
    """Publish one event; returns its sequence number in the stream."""
    nc = await nats.connect(url)
    try:
        ack = await nc.jetstream().publish(
            SUBJECT, json.dumps({"order_id": order_id, "customer": customer}).encode()
        )
        return int(ack.seq)
    finally:
        await nc.close()


async def read_orders(url: str, durable: str) -> list[dict[str, object]]:
    """Everything a durable consumer has not yet acknowledged, acknowledged now."""
    nc = await nats.connect(url)
    try:
        sub = await nc.jetstream().pull_subscribe(SUBJECT, durable=durable, stream=STREAM)
        events: list[dict[str, object]] = []
        while True:
            try:
                batch = await sub.fetch(10, timeout=0.2)
            # "Nothing more" arrives as nats' own TimeoutError or, when the client's deadline
            # runs out between its two pull requests, as asyncio's.
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                return events
            for message in batch:
                events.append(json.loads(message.data))
                await message.ack()
    finally:
        await nc.close()


async def stream_size(url: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(STREAM)
        return int(info.state.messages)
    finally:
        await nc.close()


async def purge(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().purge_stream(STREAM)
    finally:
        await nc.close()
