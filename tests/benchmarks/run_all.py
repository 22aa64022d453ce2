"""Run every benchmark: `python -m tests.benchmarks.run_all [name ...]`.

Each `bench_*.py` module beside this file has a `main()` that prints its cases.
"""

from __future__ import annotations

import importlib
import pathlib
import sys


def main(argv: list[str]) -> None:
    here = pathlib.Path(__file__).parent
    names = sorted(p.stem for p in here.glob("bench_*.py"))
    wanted = [n for n in names if not argv or any(a in n for a in argv)]
    for name in wanted:
        print(f"\n===== {name} =====", flush=True)
        importlib.import_module(f"tests.benchmarks.{name}").main()


if __name__ == "__main__":
    main(sys.argv[1:])
