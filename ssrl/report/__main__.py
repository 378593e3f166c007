"""python -m ssrl.report SUBCOMMAND ...: re-score, print a results file's table, check docs, restat, merge runs, publish."""

from __future__ import annotations

import sys

USAGE = """usage: python -m ssrl.report rescore FILE [--results results.json]
       python -m ssrl.report markdown RESULTS.json
       python -m ssrl.report docs FILE.md... [--write]
       python -m ssrl.report restat RESULTS.json...
       python -m ssrl.report merge A.json B.json... --predictions A.npz B.npz... --out C.json
       python -m ssrl.report publish RESULTS.json --out docs/results/NAME.json"""


def main(argv: list[str] | None = None) -> int:
    """Dispatch the subcommand."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in ("rescore", "markdown", "docs", "merge", "restat", "publish"):
        print(USAGE, file=sys.stderr)
        return 2
    if args[0] == "rescore":
        from ssrl.report.rescore import main as rescore

        return rescore(args[1:])
    if args[0] == "merge":
        from ssrl.report.merge import main as merge

        return merge(args[1:])
    if args[0] == "publish":
        from ssrl.report.publish import main as publish

        return publish(args[1:])
    from ssrl.report.generate import main as generate

    return generate(args)


if __name__ == "__main__":
    sys.exit(main())
