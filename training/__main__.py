"""Command line: `python -m training fit --data DIR --out DIR [...]`."""

from __future__ import annotations

import argparse
import logging
import sys

from service.errors import HerpscoreError


def main(argv: list[str] | None = None) -> int:
    """Parse `fit ...`, run it, and turn expected failures into a message and exit code 2."""
    from training.fit import get_args_parser
    from training.fit import main as fit

    parser = argparse.ArgumentParser(prog="python -m training")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "fit",
        parents=[get_args_parser(add_help=False)],
        help="fine-tune a model folder from a labelled image folder",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from training.backbones import WeightsUnavailable
    from training.export import ExportError

    try:
        folder = fit(args)
    except (HerpscoreError, WeightsUnavailable, ExportError) as exc:
        logging.getLogger("training").error("%s", exc)
        return 2
    logging.getLogger("training").info("done: %s", folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
