"""Playing a scenario against the real agent on a simulated device, and checking it.

Hardware steps go to :func:`simulator.drive.apply_to_board`; ``api`` steps call the agent
as its local API would; ``check`` steps are asserted on the spot; power returning starts
a new boot. ``server`` steps need a server hook (an :class:`~simulator.operator.Operator`,
which the demo and the e2e tests pass); without one, or when the server does not offer the
action, they are reported as skipped. At the end the device store is verified offline and
the scenario's expectations are checked against that report; the expectations about the
server (``revoked``, ``all_receipted``, ``legal_hold``) are checked with the operator, or
reported as skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import layout
from protocol.journal import JournalScan
from protocol.record import RecordKind, SignedRecord
from protocol.verify import Report, verify_path
from simulator.clock import Timeline
from simulator.drive import apply_to_board
from simulator.fleet import settle
from simulator.operator import Operator, UnsupportedStepError
from simulator.runner import DeviceSpec, SimulatedDevice, Transport
from simulator.scenario import Api, Check, Lose, Note, PowerRestore, Scenario, Server, Step

log = logging.getLogger(__name__)

ServerHook = Callable[[SimulatedDevice, Server], Awaitable[None]]


@dataclass
class ScenarioResult:
    """What happened, and whether it was what the scenario expects."""

    scenario: str
    report: Report
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Every expectation and every check held."""
        return not self.problems


async def _api(device: SimulatedDevice, step: Api) -> None:
    agent = device.agent
    if agent is None:
        return
    args = step.args
    match step.action:
        case "incident_open":
            await agent.open_incident(args.get("case"), args.get("label"))
        case "incident_close":
            await agent.close_incident()
        case "bookmark":
            await agent.bookmark(str(args.get("label", "bookmark")))
        case "photo":
            await agent.photo(args.get("label"))
        case "duty":
            await (agent.go_on_duty() if args.get("on", True) else agent.go_off_duty())
        case "self_check":
            await agent.run_self_check()
        case "delete":
            try:
                await agent.refuse_deletion("local_api", str(args.get("target", "")))
            except Exception as exc:  # refused, as it must be
                log.info("deletion refused: %s", exc)
        case other:
            raise ValueError(f"unknown api action {other!r}")


def _check(device: SimulatedDevice, step: Check) -> str | None:
    agent, board = device.agent, device.board
    actual: Any
    match step.what:
        case "recording":
            actual = bool(agent and agent.recorder.recording)
        case "on_duty":
            actual = bool(agent and agent.on_duty)
        case "incident_open":
            actual = bool(agent and agent.writer.binding.incident)
        case "pattern":
            actual = board.indicator.pattern.value if board else None
        case "powered":
            actual = bool(board and board.power.on)
        case _:
            return f"at {step.at:g} s: unknown check {step.what!r}"
    if actual != step.value:
        return f"at {step.at:g} s: {step.what} is {actual!r}, expected {step.value!r}"
    return None


def record_kinds(store: Path) -> dict[str, int]:
    """How many records of each kind the store's journals hold."""
    counts: dict[str, int] = {}
    for name in sorted((store / layout.JOURNAL_DIR).iterdir()):
        with name.open("rb") as f:
            for item in JournalScan(f, name.name).items():
                try:
                    kind = SignedRecord.parse(item).record.kind.value
                except Exception:  # noqa: S112 - the verifier reports these
                    continue
                counts[kind] = counts.get(kind, 0) + 1
    return counts


async def play(
    scenario: Scenario,
    store: Path,
    *,
    seed: int = 0,
    timeline: Timeline | None = None,
    server: ServerHook | None = None,
    spec: DeviceSpec | None = None,
    transport: Transport | None = None,
    device: SimulatedDevice | None = None,
) -> ScenarioResult:
    """Run ``scenario`` on a fresh simulated device storing to ``store``.

    Pass ``device`` (made, not yet booted) to keep a handle on it, e.g. to settle uploads.
    """
    if device is None:
        spec = spec or DeviceSpec(f"sim-{scenario.name.replace('_', '-')}"[:63], store, seed=seed)
        device = SimulatedDevice(spec, timeline or Timeline(), transport)
    device.spec.board = {**scenario.device, **device.spec.board}
    device.duty_at_boot = False
    problems: list[str] = []
    skipped: list[str] = []
    start = device.timeline.now()
    await device.boot()
    try:
        for step in scenario.actions():
            wait = start + step.at - device.timeline.now()
            if wait > 0:
                await device.timeline.sleep(wait)
            problems.extend(await _perform(device, step, server, skipped))
        wait = start + scenario.duration - device.timeline.now()
        if wait > 0:
            await device.timeline.sleep(wait)
    finally:
        await device.stop()
    report = verify_path(store)
    result = ScenarioResult(scenario.name, report, problems, skipped, record_kinds(store))
    result.problems.extend(_expectations(scenario, result, device))
    result.problems.extend(await _server_expectations(scenario, result, device, server))
    return result


async def _server_expectations(
    scenario: Scenario, result: ScenarioResult, device: SimulatedDevice, server: ServerHook | None
) -> list[str]:
    expect, out = scenario.expect, []
    operator = server if isinstance(server, Operator) else None
    if expect.all_receipted is not None:
        if device.spec.server_url:
            settled = (await settle(device)).settled
            if settled != expect.all_receipted:
                out.append(f"all receipted: {settled}, expected {expect.all_receipted}")
        else:
            result.skipped.append("expect all_receipted: no server")
    if expect.revoked is not None:
        if operator is None:
            result.skipped.append("expect revoked: no server operator")
        else:
            info = await operator.device(device.spec.device_id)
            if (info.get("revoked") is not None) != expect.revoked:
                out.append(f"revoked: {info.get('revoked')}, expected {expect.revoked}")
    if expect.legal_hold is not None:
        result.skipped.append(f"expect legal hold {expect.legal_hold}: not offered by the server")
    return out


async def _perform(
    device: SimulatedDevice, step: Step, server: ServerHook | None, skipped: list[str]
) -> list[str]:
    assert device.board is not None
    if step.note:
        log.info("%s t=%g s: %s", device.spec.device_id, step.at, step.note)
    if apply_to_board(step, device.board):
        if isinstance(step, PowerRestore):
            await device.boot()
        return []
    match step:
        case Api():
            await _api(device, step)
        case Check():
            problem = _check(device, step)
            return [problem] if problem else []
        case Server():
            if server is None:
                skipped.append(f"t={step.at:g} s server {step.action}: no server")
            else:
                try:
                    await server(device, step)
                except UnsupportedStepError as exc:
                    skipped.append(f"t={step.at:g} s server {step.action}: {exc}")
        case Lose():
            device.board.link.inject_down()
        case Note():
            pass
    return []


def _expectations(scenario: Scenario, result: ScenarioResult, device: SimulatedDevice) -> list[str]:
    expect, report, out = scenario.expect, result.report, []
    if expect.authentic is not None and report.authentic != expect.authentic:
        errors = [
            f"{f.code.value}: {f.message}" for f in report.findings if f.severity.value == "error"
        ]
        out.append(f"verdict {report.verdict}, expected authentic={expect.authentic}: {errors}")
    if expect.gap_causes is not None:
        causes = tuple(g.cause for g in report.gaps)
        if causes != expect.gap_causes:
            out.append(f"gap causes {causes}, expected {expect.gap_causes}")
    for kind in expect.records:
        if not result.kinds.get(kind):
            out.append(f"no {kind} record")
    if expect.incidents is not None:
        opened = result.kinds.get(RecordKind.INCIDENT_OPEN.value, 0)
        if opened != expect.incidents:
            out.append(f"{opened} incidents opened, expected {expect.incidents}")
    if expect.min_covered is not None and scenario.duration > 0:
        on_duty = _duty_seconds(report)
        covered = report.covered / 1e6
        if on_duty and covered / on_duty < expect.min_covered:
            out.append(
                f"covered {covered:.0f} s of {on_duty:.0f} s on duty, "
                f"expected at least {expect.min_covered:.0%}"
            )
    if device.failures:
        out.append(f"agent failures: {device.failures!r}")
    return out


def _duty_seconds(report: Report) -> float:
    return sum((s.end - s.start) / 1e6 for s in report.sessions)
