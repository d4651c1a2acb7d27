"""``python -m pykernels --info``: print what this installation was built with and can run."""

from __future__ import annotations

import argparse
import json
import sys

from . import build_info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pykernels", description=__doc__)
    parser.add_argument("--info", action="store_true", help="print build and runtime information as JSON")
    args = parser.parse_args(argv)
    if not args.info:
        parser.print_help()
        return 0
    print(json.dumps(build_info(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
