"""`ltexport serve REPO`: run a Triton Inference Server for a model repository in the foreground."""

import signal
from pathlib import Path

import click

from ltexport.cli import main


@main.command("serve", context_settings={"ignore_unknown_options": True})
@click.argument("repo", type=click.Path(path_type=Path), required=False)
@click.argument("tritonserver_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address the gRPC, HTTP and metrics endpoints listen on (0.0.0.0: every interface).")
@click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(0, 65535), help="0: a free port.")
@click.option("--http-port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--metrics-port", default=8002, show_default=True, type=click.IntRange(0, 65535))
@click.option("--check", is_flag=True, help="Only check that a tritonserver and its shared libraries are found.")
def serve_cmd(repo, tritonserver_args, address, grpc_port, http_port, metrics_port, check):
    """Serve model repository REPO with tritonserver until interrupted.

    Its python backend runs in this Python environment, so the models of `ltexport package
    --runtime python` import ltexport from it. Arguments after `--` go to tritonserver.
    """
    from ltexport.errors import LtexportError
    from ltexport.triton.server import TritonServer, check_repository, runnable_triton

    if not check:
        if repo is None:
            raise click.UsageError("Missing argument 'REPO'.")
        check_repository(repo)  # the user's input first, then the installation
    install = runnable_triton()
    if check:
        click.echo(f"tritonserver: {install.binary} ({install.origin}); backends: {', '.join(install.backends)}")
        return
    server = TritonServer(repo, address=address, grpc_port=grpc_port, http_port=http_port,
                          metrics_port=metrics_port, extra_args=tuple(tritonserver_args), install=install)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the server too, not only Ctrl-C
    try:
        server.start()
        server.wait_ready()
        click.echo(f"serving {server.repo}: gRPC {server.grpc_url}, HTTP {address}:{server.http_port}, "
                   f"metrics {address}:{server.metrics_port} (Ctrl-C stops)", err=True)
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
    if server.proc.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
        raise LtexportError(f"tritonserver exited with status {server.proc.returncode}; see its log above")


def _interrupt(*_):
    raise KeyboardInterrupt
