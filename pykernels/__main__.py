"""python -m pykernels: information about this installation, and building its kernels ahead of time."""

from __future__ import annotations

import argparse
import json
import sys

DESCRIPTION = """\
info: print what this installation was built with and can run, as JSON.
build: make sure the compiled kernels for the imported torch are ready (after a plain "pip install .", the
first import compiles them into the cache; this does it now, and says where they are)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pykernels", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", nargs="?", choices=("info", "build"), help="what to do")
    args = parser.parse_args(argv)
    command = args.command
    if command is None:
        parser.print_help()
        return 0
    import pykernels  # (importing it compiles the kernels when no build for this torch exists yet)

    info = pykernels.build_info()
    if command == "build":
        print(f"pykernels: kernels for torch {info['built_with_torch']} ready ({info['extension']})")
    else:
        print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
