"""The ``unbroken`` command: the composition root that assembles the packages.

Each sub-command lives in its own module; this one only registers them. Back ends are
chosen here by name (simulated or real hardware, embedded or external services), so that
no other package imports both sides of a seam.
"""

from __future__ import annotations

import typer

from cli import agent_cmd, bench_cmd, ctl_cmd, demo_cmd, server_cmd, sim_cmd, verify_cmd

app = typer.Typer(
    name="unbroken",
    help="Body-worn camera evidence that stays whole: agent, server, verifier, simulator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Body-worn camera evidence that stays whole: agent, server, verifier, simulator."""


app.command("demo")(demo_cmd.demo)
app.command("server")(server_cmd.server)
app.command("enrol-token")(server_cmd.enrol_token)
app.command("verify")(verify_cmd.verify)
app.command("agent")(agent_cmd.agent)
app.add_typer(ctl_cmd.ctl, name="ctl")
app.add_typer(sim_cmd.sim, name="sim")
app.add_typer(bench_cmd.bench, name="bench")


def main() -> None:
    """Console-script entry point."""
    app()
