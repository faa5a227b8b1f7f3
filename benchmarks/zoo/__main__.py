"""``python -m benchmarks.zoo prepare [--case NAME]`` builds the zoo; ``python -m benchmarks.zoo run ...`` runs it
(same as ``python benchmarks/zoo/run.py ...``); ``python -m benchmarks.zoo list`` lists the cases."""
import sys


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "prepare":
        from .prepare import main as m
    elif cmd == "run":
        from .run import main as m
    elif cmd == "list":
        from .cases import CASES
        for k, v in CASES.items():
            print(f"{k:16s} {v['family']:24s} {v['description']}")
        return 0
    else:
        print(f"unknown command {cmd!r}: give prepare, run or list", file=sys.stderr)
        return 2
    return m(rest)


if __name__ == "__main__":
    sys.exit(main())
