"""The agent: a device on duty. Owns the recorder, the announcer, sync and the controls.

Life of a run: scan the store and open a session (writing a recovery record after an
unclean stop), run the pre-shift self-check, start the camera, go on duty (notice to the
people present, then continuous recording) and serve until stopped; then stop recording
and close the session. Long-lived work runs as named tasks in one TaskGroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from agent.announce import Announcer, tls_context
from agent.capture.store import EvidenceStore
from agent.config import AgentConfig
from agent.enrolment import Identity
from agent.errors import DeletionRefusedError
from agent.localapi import LocalApi, socket_path
from agent.recorder import Recorder, RecorderConfig
from agent.selfcheck import SelfCheck, run_self_check
from agent.signing.chain import Binding, ChainWriter
from agent.sync import Syncer
from hardware.base import Board, ButtonName, LedPattern, MediaPacket, PacketKind, Prompt
from protocol.events import EventKind
from protocol.record import RecordKind, SignedRecord, Suite

log = logging.getLogger(__name__)

DUTY_FILE = "state/duty"
ANNOUNCED = {
    RecordKind.INCIDENT_OPEN: EventKind.INCIDENT_OPENED,
    RecordKind.INCIDENT_CLOSE: EventKind.INCIDENT_CLOSED,
    RecordKind.DELETION_REFUSED: EventKind.DELETION_REFUSED,
    RecordKind.STORAGE_FULL: EventKind.STORAGE_FULL,
    RecordKind.CLOCK_FAULT: EventKind.CLOCK_FAULT,
    RecordKind.MEDIA_FAILING: EventKind.MEDIA_FAILING,
    RecordKind.SELF_CHECK: EventKind.SELF_CHECK,
}


class Agent:
    """One device's program."""

    def __init__(
        self,
        config: AgentConfig,
        board: Board,
        store: EvidenceStore,
        identity: Identity,
        *,
        suite: Suite = Suite.CHACHA,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.board = board
        self.store = store
        self.identity = identity
        self.scan = store.open_boot()
        self.boot = os.urandom(16)
        writer = ChainWriter(
            identity.device,
            suite,
            identity.signer,
            identity.recipient,
            self.boot,
            self.scan.next_seq,
            self.scan.prev,
        )
        writer.binding = Binding(officer=config.officer)
        self.writer = writer
        self.recorder = Recorder(
            board,
            store,
            writer,
            RecorderConfig(
                config.segment_seconds, config.max_segment_seconds, config.preroll_seconds
            ),
        )
        self.announcer = Announcer(
            identity.device,
            self.boot,
            identity.signer,
            board.storage,
            board.clock,
            config.mqtt_url,
            self.command,
            protocol=config.mqtt_protocol,
            tls=tls_context(config.mqtt_ca_file, config.mqtt_cert_file, config.mqtt_key_file)
            if (config.mqtt_url or "").startswith("mqtts:")
            else None,
        )
        self.syncer: Syncer | None = None
        if config.server_url:
            headers = (
                {"authorization": f"Bearer {identity.api_token}"} if identity.api_token else {}
            )
            client = httpx.AsyncClient(
                base_url=config.server_url, transport=transport, headers=headers, timeout=30
            )
            self.syncer = Syncer(
                client,
                identity.device,
                store,
                writer,
                board.clock,
                interval=config.sync_seconds,
                health=lambda: self.announcer.last_telemetry,
            )
        self.recorder.listen(self._on_record)
        self.local_api: LocalApi | None = LocalApi(self, socket_path(config.store))
        self.frames_seen = 0
        self.on_duty = False
        self.self_check: SelfCheck | None = None
        #: Failures of the helper tasks (sync, announcements...), each restarted.
        self.helper_failures = 0
        self._stopping = asyncio.Event()
        self._killed = False
        self._duty = asyncio.Lock()
        self._ready = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ hooks
    def _on_record(self, signed: SignedRecord) -> None:
        kind = signed.record.kind
        if kind in ANNOUNCED:
            body = {k: v for k, v in signed.record.body.items() if isinstance(v, str | int | bool)}
            body["seq"] = signed.record.seq
            if signed.record.incident:
                body["incident"] = signed.record.incident
            self.announcer.announce(ANNOUNCED[kind], body)
        if self.syncer is not None:
            self.syncer.poke()

    def _sink(self, packet: MediaPacket) -> None:
        if packet.kind is PacketKind.VIDEO:
            self.frames_seen += 1
        self.recorder.sink(packet)

    def clock_offset(self) -> int | None:
        """Offset measured against the server, if any."""
        return self.syncer.state.clock_offset_us if self.syncer else None

    def best_offset(self) -> int:
        """The offset to act on: measured against the server, else as the OS reports it."""
        measured = self.clock_offset()
        # A measurement blurred by a slow round trip says less than the OS's own estimate.
        if measured is not None and self.syncer and self.syncer.state.clock_error_us <= 250_000:
            return measured
        return self.board.clock.status().offset

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Boot: session, recovery, camera, self-check, duty."""
        self._bind_controls()  # live at once; actions wait until the boot is done
        unclean = not self.scan.clean
        await self.recorder.open_session("boot", self.scan)
        await self.board.camera.start(self._sink)
        await self.board.clock.sleep(1.0)  # let the camera deliver its first frames
        await self.run_self_check()
        # After an unclean stop on duty (power cut, crash) the device resumes recording.
        resume = unclean and self._was_on_duty()
        if self.config.duty_at_boot or resume:
            await self.go_on_duty()
        self._ready.set()

    async def run_self_check(self) -> SelfCheck:
        """Check the device for the shift ahead; record and announce the result."""
        check = run_self_check(
            self.board,
            self.config,
            frames_seen=self.frames_seen,
            releasable=0,
            clock_offset_us=self.clock_offset(),
        )
        self.self_check = check
        await self.recorder.event(RecordKind.SELF_CHECK, check.body())
        if not check.passed:
            failed = [i.name for i in check.items if not i.passed]
            log.warning("self-check failed: %s (duty allowed, flagged)", ", ".join(failed))
            self.board.indicator.show(LedPattern.FAULT)
        return check

    async def notice(self, reason: str, prompt: Prompt) -> None:
        """Tell the people present: LED pattern and audible prompt, recorded in the chain."""
        self.board.indicator.show(LedPattern.NOTICE)
        await self.recorder.event(
            RecordKind.NOTICE,
            {"reason": reason, "pattern": LedPattern.NOTICE.value, "prompt": prompt.value},
        )
        await self.board.speaker.play(prompt)

    async def go_on_duty(self) -> None:
        """Open a session if needed, give notice and record continuously."""
        if self.on_duty:
            return
        if self.writer.session is None:
            await self.recorder.open_session("duty")
        await self.notice("recording_start", Prompt.RECORDING_STARTED)
        await self.recorder.start_recording()
        self._set_duty(True)
        self.board.indicator.show(LedPattern.RECORDING)
        started: dict[str, Any] = {"officer": self.config.officer or ""}
        if self.self_check is not None and not self.self_check.passed:
            # On duty after a failed self-check: allowed, and flagged to the fleet manager.
            started["self_check_failed"] = [i.name for i in self.self_check.items if not i.passed]
        self.announcer.announce(EventKind.RECORDING_STARTED, started)
        log.info("%s on duty: recording", self.identity.device)

    async def go_off_duty(self) -> None:
        """Stop recording and close the session."""
        if not self.on_duty:
            return
        if self.writer.binding.incident:
            await self.close_incident()
        await self.recorder.close_session("off_duty")
        self._set_duty(False)
        self.board.indicator.show(LedPattern.IDLE)
        await self.board.speaker.play(Prompt.RECORDING_STOPPED)
        self.announcer.announce(EventKind.RECORDING_STOPPED, {})
        log.info("%s off duty: session closed", self.identity.device)

    async def open_incident(self, case: str | None = None, label: str | None = None) -> str:
        """Open an incident (records stay continuous; the binding changes)."""
        if not self.on_duty:
            await self.go_on_duty()
        incident = self.writer.binding.incident
        if incident:
            return incident
        incident = uuid.uuid4().hex[:16]
        self.writer.binding = self.writer.binding.__class__(
            self.writer.binding.officer, incident, case
        )
        body = {"label": label} if label else {}
        await self.recorder.event(RecordKind.INCIDENT_OPEN, body)
        await self.notice("incident_open", Prompt.INCIDENT_OPENED)
        self.board.indicator.show(LedPattern.INCIDENT)
        return incident

    async def close_incident(self, label: str | None = None) -> None:
        """Close the open incident."""
        if not self.writer.binding.incident:
            return
        await self.recorder.event(RecordKind.INCIDENT_CLOSE, {"label": label} if label else {})
        self.writer.binding = Binding(self.writer.binding.officer)
        await self.board.speaker.play(Prompt.INCIDENT_CLOSED)
        self.board.indicator.show(LedPattern.RECORDING if self.on_duty else LedPattern.IDLE)

    async def bookmark(self, label: str) -> SignedRecord:
        """A bookmark ("door on arrival") in the chain."""
        return await self.recorder.event(RecordKind.BOOKMARK, {"label": label[:200]})

    async def photo(self, label: str | None = None) -> SignedRecord | None:
        """A still photo as a chained record."""
        return await self.recorder.photo(await self.board.camera.still(), label)

    async def refuse_deletion(self, interface: str, target: str, requester: str = "") -> None:
        """Every deletion request is refused, recorded and announced; raises afterwards."""
        opened = False
        if self.writer.session is None:
            await self.recorder.open_session("event")
            opened = True
        body = {"interface": interface[:32], "target": target[:200]}
        if requester:
            body["requester"] = requester[:200]
        await self.recorder.event(RecordKind.DELETION_REFUSED, body)
        if opened:
            await self.recorder.close_session("event")
        log.warning("refused to delete %s (asked through %s)", target, interface)
        raise DeletionRefusedError(f"evidence is never deleted on the device ({target})")

    async def command(self, command: dict[str, Any]) -> None:
        """A command from the server over MQTT."""
        name = command.get("command")
        if name == "delete":
            with contextlib.suppress(DeletionRefusedError):
                await self.refuse_deletion(
                    "mqtt", str(command.get("target", "")), str(command.get("requester", ""))
                )
        elif name == "self_check":
            await self.run_self_check()
        elif name == "telemetry":
            self.publish_telemetry()
        else:
            log.warning("ignored unknown command %r", name)

    def _bind_controls(self) -> None:
        buttons = self.board.buttons
        buttons.on_hold(ButtonName.RECORD, lambda: self._spawn(self._toggle_duty()))
        buttons.on_press(ButtonName.INCIDENT, lambda: self._spawn(self._toggle_incident()))
        buttons.on_press(ButtonName.BOOKMARK, lambda: self._spawn(self._bookmark_now()))
        buttons.on_hold(ButtonName.BOOKMARK, lambda: self._spawn(self._photo_now()))

    def _spawn(self, coro: Any) -> None:
        # Button callbacks run on the loop thread; their work is short and tracked here so
        # that stop() waits for it. Presses during boot act once the boot is done.
        task = asyncio.get_running_loop().create_task(self._when_ready(coro), name="button-action")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _set_duty(self, on: bool) -> None:
        """Remember duty across reboots (not evidence: a plain state file)."""
        self.on_duty = on
        path = self.config.store / DUTY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("on" if on else "off")
        tmp.replace(path)

    def _was_on_duty(self) -> bool:
        try:
            return (self.config.store / DUTY_FILE).read_text() == "on"
        except OSError:
            return False

    async def wait_ready(self) -> None:
        """Return once the boot is done (session open, self-check run, duty as configured)."""
        await self._ready.wait()

    async def _when_ready(self, coro: Any) -> None:
        await self._ready.wait()
        await coro

    async def _toggle_duty(self) -> None:
        async with self._duty:  # one toggle at a time: a second hold waits for the first
            await (self.go_off_duty() if self.on_duty else self.go_on_duty())

    async def _toggle_incident(self) -> None:
        if self.writer.binding.incident:
            await self.close_incident()
        else:
            await self.open_incident()

    async def _bookmark_now(self) -> None:
        await self.bookmark("button")

    async def _photo_now(self) -> None:
        await self.photo("button")

    # ------------------------------------------------------------------ telemetry
    def telemetry(self) -> dict[str, Any]:
        """Health readings for the fleet view."""
        battery = self.board.battery.read()
        storage = self.board.storage.state()
        bitrate = self.board.camera.config.bitrate + 64_000
        sync = self.syncer.state if self.syncer else None
        status = self.board.clock.status()
        body: dict[str, Any] = {
            "battery_permille": int(battery.percent * 10),
            "battery_mv": battery.voltage_mv,
            "charging": battery.charging,
            "storage_free": storage.free,
            "storage_total": storage.total,
            "record_seconds_left": max(0, int(self.store.free() * 8 / bitrate)),
            "clock_offset_us": self.best_offset(),
            "clock_synced": status.synced,
            "recording": self.recorder.recording,
            "backlog_records": sync.backlog_records if sync else 0,
            "backlog_bytes": sync.backlog_media if sync else 0,
            "last_receipt_seq": sync.last_receipt_seq if sync else -1,
            "last_receipt_time": sync.last_receipt_time if sync else 0,
        }
        if battery.temperature_c is not None:
            body["temperature_mc"] = int(battery.temperature_c * 1000)
        return body

    def publish_telemetry(self) -> None:
        """Announce telemetry now."""
        self.announcer.announce(EventKind.TELEMETRY, self.telemetry())

    async def _telemetry_loop(self) -> None:
        limit = int(self.config.clock_offset_threshold_s * 1e6)
        faulted = False
        while True:
            self.publish_telemetry()
            offset = self.best_offset()
            error = (
                self.syncer.state.clock_error_us
                if self.syncer and self.clock_offset() is not None
                else 0
            )
            if abs(offset) - error > limit and not faulted:
                faulted = True
                log.warning(
                    "clock fault: offset %+.3f s over the %.1f s threshold",
                    offset / 1e6,
                    limit / 1e6,
                )
                await self.recorder.event(
                    RecordKind.CLOCK_FAULT, {"offset": offset, "threshold": limit}
                )
            elif abs(offset) + error <= limit:
                faulted = False
            await self.board.clock.sleep(self.config.telemetry_seconds)

    # ------------------------------------------------------------------ run
    def stop(self) -> None:
        """Ask :meth:`run` to finish cleanly."""
        self._stopping.set()

    def kill(self) -> None:
        """End :meth:`run` at once without closing anything: a simulated power cut."""
        self._killed = True
        self._stopping.set()

    async def run(self) -> None:
        """Start, serve until :meth:`stop`, then close the session cleanly."""
        await self.start()
        try:
            async with asyncio.TaskGroup() as group:
                # Only the recorder's failure ends the run; the helpers around it (telemetry,
                # announcements, sync, the local API) are restarted if they fail, so that a
                # bad answer from the network never stops the camera.
                tasks = [
                    group.create_task(self.recorder.run(), name="recorder"),
                    group.create_task(
                        self._supervised("telemetry", self._telemetry_loop), name="telemetry"
                    ),
                    group.create_task(
                        self._supervised("announcer", self.announcer.run), name="announcer"
                    ),
                ]
                if self.syncer is not None:
                    tasks.append(
                        group.create_task(self._supervised("sync", self.syncer.run), name="sync")
                    )
                if self.local_api is not None:
                    tasks.append(
                        group.create_task(
                            self._supervised("local API", self.local_api.run), name="local-api"
                        )
                    )
                await self._stopping.wait()
                for task in tasks:
                    task.cancel()
        finally:
            if not self._killed:
                await self.shutdown()

    async def _supervised(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run``; if it fails, log it and start it again after a growing pause."""
        delay = 1.0
        while True:
            try:
                await run()
                return
            except Exception:
                self.helper_failures += 1
                log.exception("%s failed; restarting it in %.0f s", name, delay)
            await self.board.clock.sleep(delay)
            delay = min(delay * 2, 60.0)

    async def shutdown(self) -> None:
        """Stop capture, write the last segment and close the session."""
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.board.camera.stop()
        await self.recorder.close_session("shutdown")
        self.on_duty = False
        self.board.indicator.show(LedPattern.OFF)
        if self.syncer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await self.syncer.sync_once()
            await self.syncer.client.aclose()
