"""``python -m ssl_lightning.bench [steps|data|mae|text|syncbn|knn|moco|logging] [overrides...]``: one entry point
for every benchmark.

``syncbn``, ``knn``, ``moco`` and ``logging`` take plain ``key=value`` settings (see their modules), the others Hydra
overrides."""

from __future__ import annotations

import sys

MODES = ("steps", "data", "mae", "text", "syncbn", "knn", "moco", "logging")


def split_mode(argv: list[str]) -> tuple[str, list[str]]:
    """The benchmark named by the first argument (``steps`` when it is an override), and the Hydra arguments.

    ``data`` (and the older ``--data`` flag or ``mode=data`` override) is the step benchmark's data mode.
    """
    args = [("mode=data" if a == "--data" else a) for a in argv]
    if args and args[0] in MODES:
        mode, args = args[0], args[1:]
    else:
        mode = "steps"
    if mode == "data":
        mode, args = "steps", ["mode=data", *args]
    return mode, args


def main() -> None:
    mode, args = split_mode(sys.argv[1:])
    sys.argv = [sys.argv[0], *args]
    if mode == "mae":
        from ssl_lightning.bench.mae import main as run
    elif mode == "text":
        from ssl_lightning.bench.text import main as run
    elif mode == "syncbn":
        from ssl_lightning.bench.syncbn import main as run
    elif mode == "knn":
        from ssl_lightning.bench.knn import main as run
    elif mode == "moco":
        from ssl_lightning.bench.moco import main as run
    elif mode == "logging":
        from ssl_lightning.bench.logcost import main as run
    else:
        from ssl_lightning.bench.steps import main as run
    run()


if __name__ == "__main__":
    main()
