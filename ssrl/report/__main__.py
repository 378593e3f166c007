"""python -m ssrl.report rescore FILE [--results results.json]: re-score a sweep from its test probabilities."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch the subcommand (rescore)."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "rescore":
        print("usage: python -m ssrl.report rescore FILE [--results results.json]", file=sys.stderr)
        return 2
    from ssrl.report.rescore import main as rescore

    return rescore(args[1:])


if __name__ == "__main__":
    sys.exit(main())
