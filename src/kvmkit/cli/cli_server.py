"""``kvmkit cli-server``: keep a warm process so kvmkit commands start in milliseconds (kvmkit.cli.warm)."""

from __future__ import annotations

import typer

app = typer.Typer(help="keep a warm process so kvmkit commands start in milliseconds", add_completion=False,
                  invoke_without_command=True)


@app.callback()
def cli_server(
    socket: str = typer.Option(None, "--socket", envvar="KVMKIT_CLI_SOCKET",
                               help="Unix socket path (default: <data dir>/run/cli.sock)"),
) -> None:
    """Serve kvmkit commands from one process that has already imported everything: each command runs
    in a forked child with the caller's terminal, environment, directory and user (callers of another
    user are refused). Runs in the foreground until stopped (SIGTERM or Ctrl-C); restarts itself when
    kvmkit is updated. Commands run exactly as without it; KVMKIT_NO_WARM=1 bypasses it."""
    from kvmkit.cli.warm_server import run

    run(socket)
