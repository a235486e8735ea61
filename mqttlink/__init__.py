"""The MQTT connection both sides make: which version the broker speaks, a persistent
session in that version, and TLS with a client certificate.

The agent's announcer and the server's consumer each hold a :class:`BrokerLink`; what they
publish and subscribe to, and what they do with it, stays theirs.

Protocol (ARCHITECTURE §6): ``"3.1.1"`` and ``"5"`` pin the MQTT version. ``"auto"`` (the
default) asks the broker once whether it speaks MQTT 5, with a bare MQTT 5 CONNECT under a
throwaway client id (``<id>-probe``: clean start, no will, no properties, no credentials,
so that even a 3.1.1 broker that reads packets field by field, like amqtt, can parse and
refuse it; a real CONNECT's properties and will make amqtt wait for bytes that never come).
A refusal for the protocol version means MQTT 3.1.1; any other answer means MQTT 5. The
choice holds for later reconnects; a real MQTT 5 CONNECT refused for its version (the broker
was swapped) also moves the link to 3.1.1. The session is persistent either way: clean
session off in 3.1.1, clean start off with a session expiry of :data:`SESSION_EXPIRY_S` in
MQTT 5. Nothing essential depends on MQTT 5.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

MqttProtocol = Literal["auto", "3.1.1", "5"]
#: How long an MQTT 5 broker keeps a session (its subscriptions and the messages queued
#: for it) while the client is away.
SESSION_EXPIRY_S = 7 * 24 * 3600
#: CONNACK codes of a broker refusing the protocol version: 3.1.1's 0x01, MQTT 5's 0x84.
UNSUPPORTED_VERSION = frozenset({1, 0x84})
VERSION_NAME = {aiomqtt.ProtocolVersion.V311: "3.1.1", aiomqtt.ProtocolVersion.V5: "5"}


def refused_version(exc: BaseException) -> bool:
    """Whether ``exc`` is a broker refusing the CONNECT for its protocol version."""
    if not isinstance(exc, MqttConnectError):
        return False
    code = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
    return code in UNSUPPORTED_VERSION


def mqtt5_properties(packet: int, **values: int) -> Properties:
    """MQTT 5 properties of one packet type, e.g. ``MessageExpiryInterval=3600``."""
    properties = Properties(packet)  # type: ignore[no-untyped-call]  # paho is untyped here
    for name, value in values.items():
        setattr(properties, name, value)
    return properties


def session_options(version: aiomqtt.ProtocolVersion) -> dict[str, Any]:
    """Client options for a persistent session in ``version``: clean session off (3.1.1), or
    clean start off with a session expiry (MQTT 5; paho refuses either option in the other)."""
    if version is aiomqtt.ProtocolVersion.V311:
        return {"protocol": version, "clean_session": False}
    properties = mqtt5_properties(PacketTypes.CONNECT, SessionExpiryInterval=SESSION_EXPIRY_S)
    return {"protocol": version, "clean_start": False, "properties": properties}


def tls_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> ssl.SSLContext | None:
    """The TLS context of an ``mqtts://`` connection with a client certificate, or None for
    the defaults (the system's CAs, no client certificate). Raises ``OSError`` (``SSLError``
    is one) for unreadable or mismatched files, naming them."""
    if ca_file is None and cert_file is None:
        return None
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if cert_file is not None:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    except OSError as exc:
        raise OSError(
            exc.errno, f"MQTT TLS files ({ca_file}, {cert_file}, {key_file}): {exc}"
        ) from exc
    return context


class BrokerLink:
    """Where the broker is, the TLS to use, and the MQTT version it has been found to speak."""

    def __init__(
        self,
        url: str,
        client_id: str,
        protocol: MqttProtocol = "auto",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.client_id = client_id
        self.protocol = protocol
        self.tls = tls
        #: The version the next CONNECT offers: MQTT 5 unless pinned to 3.1.1 or refused.
        self.version = (
            aiomqtt.ProtocolVersion.V311 if protocol == "3.1.1" else aiomqtt.ProtocolVersion.V5
        )
        #: Whether :attr:`version` is settled (pinned, or learnt from the broker).
        self.version_known = protocol != "auto"
        #: The version of the current (or last) connection, "3.1.1" or "5"; None before one.
        self.negotiated: str | None = None

    def address(self) -> tuple[str, int, ssl.SSLContext | None]:
        """Host, port and TLS context (None for plain ``mqtt://``)."""
        url = urlsplit(self.url)
        tls = (self.tls or ssl.create_default_context()) if url.scheme == "mqtts" else None
        return url.hostname or "127.0.0.1", url.port or (8883 if tls else 1883), tls

    def client(self, **more: Any) -> aiomqtt.Client:
        """A client for a persistent session in the current version; ``more`` adds options
        (a will, a message queue size)."""
        url = urlsplit(self.url)
        host, port, tls = self.address()
        return aiomqtt.Client(
            host,
            port,
            identifier=self.client_id,
            **session_options(self.version),
            keepalive=30,
            timeout=10,
            tls_context=tls,
            username=url.username,
            password=url.password,
            **more,
        )

    async def negotiate(self) -> None:
        """In "auto", learn once whether the broker speaks MQTT 5 (see the module docstring)."""
        if self.version_known:
            return
        host, port, tls = self.address()
        try:
            async with aiomqtt.Client(
                host,
                port,
                identifier=f"{self.client_id}-probe",
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=True,
                keepalive=30,
                timeout=10,
                tls_context=tls,
            ):
                pass
        except aiomqtt.MqttError as exc:
            if refused_version(exc):
                log.info("the broker %s refused MQTT 5 (%s); using MQTT 3.1.1", self.url, exc)
                self.version = aiomqtt.ProtocolVersion.V311
            elif not isinstance(exc, MqttConnectError):
                return  # no answer: ask again before the next connection
        self.version_known = True

    def connected(self) -> str:
        """Note a connection made; return its version's name."""
        self.negotiated = VERSION_NAME[self.version]
        return self.negotiated

    def fall_back(self, exc: aiomqtt.MqttError) -> bool:
        """In "auto", move to MQTT 3.1.1 for good when the broker refuses MQTT 5; whether it
        did (then reconnect at once)."""
        if (
            self.protocol != "auto"
            or self.version is not aiomqtt.ProtocolVersion.V5
            or not refused_version(exc)
        ):
            return False
        log.info("the broker %s refused MQTT 5 (%s); using MQTT 3.1.1", self.url, exc)
        self.version = aiomqtt.ProtocolVersion.V311
        return True
