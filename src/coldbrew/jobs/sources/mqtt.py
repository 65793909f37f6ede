"""MQTT event sources: each message on a broker topic becomes an async invocation.

For each ``[[event_source]]`` with ``kind = "mqtt"`` (``url``, ``topic``) the gateway keeps a
paho-mqtt client subscribed (its own network thread, reconnecting with a backoff); the tables
are kept in step with each function's latest version by ``EventSources`` (``__init__.py``).
A message is handed to :meth:`AsyncInvocations.accept`, exactly as ``POST .../invoke?async``
would be: admitted (limits are not charged: ``limited=False``, the broker is the platform's own
caller), committed to the durable queue, run by the async worker, recorded by the function's
destinations.

Why block in the callback: with QoS 1, paho acknowledges a message when ``on_message``
returns, so waiting there until the event is committed means the broker only forgets a message
once coldbrew has it on disk (at least once: a crash between the commit and the PUBACK
redelivers it). It also makes the queue's speed the source's backpressure: paho reads no more
from the socket while one message is being committed, and the broker holds the rest.

Several gateways sharing one queue would each invoke every message; by default they subscribe
as ``$share/coldbrew-<function>/<topic>`` (MQTT shared subscriptions, Mosquitto >= 1.6) so the
broker gives each message to one of them.

The message becomes the event as it is (a JSON document, as an AWS IoT rule's ``SELECT *``
passes it); its topic travels in the client context, ``context.client_context.custom
["mqtt_topic"]``. A message that is not JSON is logged and dropped (it could never be an event).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from coldbrew import errors
from coldbrew.dataplane import InvocationRequest
from coldbrew.ids import new_request_id
from coldbrew.jobs.sources.state import SourceState

log = logging.getLogger("coldbrew.sources")
COMMIT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Subscription:
    """One function's subscription to one topic filter of one broker."""

    function: str
    url: str
    topic: str
    qos: int = 1
    shared: bool = True
    qualifier: str | None = None

    @property
    def filter(self) -> str:
        return f"$share/coldbrew-{self.function}/{self.topic}" if self.shared else self.topic


class MqttSubscriber:
    """A paho client kept subscribed; each message is submitted on the gateway's event loop."""

    def __init__(self, sub: Subscription, events: Any, loop: asyncio.AbstractEventLoop) -> None:
        import paho.mqtt.client as mqtt  # an extra: only gateways with an MQTT source need it

        self.sub = sub
        self.events = events
        self.loop = loop
        self.state = SourceState(sub.function, "mqtt", f"{sub.url} {sub.topic}")
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        parts = urlsplit(sub.url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"coldbrew-{sub.function}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        if parts.username:
            self.client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
        if parts.scheme == "mqtts":
            self.client.tls_set()
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    def start(self) -> None:
        # connect_async + loop_start: an unreachable broker is retried in the background, never
        # holding up the gateway's start.
        self.client.connect_async(self._host, self._port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    # -- paho callbacks (its network thread) --------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("mqtt %s: connect refused: %s", self.sub.url, reason)
            self.state.error(f"connect refused: {reason}")
            return
        self.connected.set()
        client.subscribe(self.sub.filter, qos=self.sub.qos)  # again after every reconnect
        log.info("mqtt source %s: subscribed to %s", self.sub.function, self.sub.filter)

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, codes: Any, props: Any) -> None:
        if any(getattr(code, "is_failure", False) for code in codes):
            log.warning("mqtt source %s: %s refused: %s", self.sub.function, self.sub.filter, codes)
            self.state.error(f"subscription refused: {codes}")
            return
        self.subscribed.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if getattr(reason, "is_failure", False):
            self.state.error(f"disconnected: {reason}")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.state.event()
        try:
            orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            self.state.dropped += 1
            log.warning(
                "mqtt source %s: a message on %s is not JSON; dropped",
                self.sub.function,
                message.topic,
            )
            return
        future = asyncio.run_coroutine_threadsafe(
            self._submit(bytes(message.payload), message.topic), self.loop
        )
        try:
            future.result(COMMIT_TIMEOUT_S)
            self.state.delivered += 1
        except errors.ColdbrewError as exc:  # the caller's kind of mistake: say it, drop it
            self.state.dropped += 1
            self.state.error(f"{exc.code}: {exc.message}")
            log.warning(
                "mqtt source %s: message on %s refused: %s %s",
                self.sub.function,
                message.topic,
                exc.code,
                exc.message,
            )
        except Exception as exc:
            self.state.dropped += 1
            self.state.error(f"lost: {exc!r}")
            log.exception("mqtt source %s: message on %s lost", self.sub.function, message.topic)

    async def _submit(self, payload: bytes, topic: str) -> str:
        request = InvocationRequest(
            self.sub.function,
            payload,
            new_request_id(),
            qualifier=self.sub.qualifier,
            protocol="mqtt",
            kind="async",
            client_context={"custom": {"mqtt_topic": topic}},
            limited=False,
        )
        request_id, _ = await self.events.accept(request)
        return request_id


class MqttSource:
    """The runner ``EventSources`` keeps per MQTT table: a subscriber on paho's thread."""

    def __init__(self, sub: Subscription, events: Any) -> None:
        self.sub = sub
        self.events = events
        self.subscriber: MqttSubscriber | None = None
        self.state = SourceState(sub.function, "mqtt", f"{sub.url} {sub.filter}")

    async def start(self) -> None:
        self.subscriber = MqttSubscriber(self.sub, self.events, asyncio.get_running_loop())
        self.subscriber.state = self.state
        self.subscriber.start()

    async def stop(self) -> None:
        if self.subscriber is not None:
            await asyncio.to_thread(self.subscriber.stop)

    async def lag(self) -> dict[str, int] | None:
        return None  # the broker holds what was not read; MQTT does not say how much
