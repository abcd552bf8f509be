"""The `spacetime` command line.

Each subcommand lives in the module that owns the concept and exposes two functions,
`add_arguments(parser)` and `run(args) -> int`. Modules are imported only when their
subcommand runs, so `spacetime serve` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("workers.generate", "generate one video on this machine and write an MP4"),
    "up": ("workers.embedded", "start the embedded stack: Redis, one worker and the gateway"),
    "serve": ("service.serve", "run the HTTP gateway against a Redis URL"),
    "worker": ("workers.worker", "run a Celery worker for one or more models"),
    "train": ("model.train", "train the tiny model (VAE stage, DiT + text encoder stage)"),
    "eval": ("model.eval", "measure prompt adherence and VAE reconstruction on the shapes world"),
    "keys": ("service.keys", "create, list and revoke API keys"),
    "verify": ("workers.provenance", "check the C2PA manifest of an MP4"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spacetime", description="Spacetime text-to-video")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # only the chosen subcommand's module is imported
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
