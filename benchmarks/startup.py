"""How long a ddpmkit command takes to start, beside the floor it cannot go under (importing
torch), measured side by side in one run: fresh interpreters, alternating, `--repeats` each.

    python benchmarks/startup.py [--repeats 7]

Prints the median and spread (min-max) of the wall time of each, and ddpmkit's start-up as a
multiple of torch's import. A start-up well above the floor means a command imports what it does
not use (tests/test_cli.py checks that matplotlib and scikit-learn are not among them).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "ddpmkit --help": [sys.executable, "-m", "ddpmkit", "--help"],
    "ddpmkit sample --help": [sys.executable, "-m", "ddpmkit", "sample", "--help"],
    "python -c 'import ddpmkit.api'": [sys.executable, "-c", "import ddpmkit.api"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):  # alternating, so a slow spell of the machine hits every command
        for name, argv in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    floor = statistics.median(times["python -c 'import torch'"])
    print(f"{'command':32s} {'median s':>9s} {'min-max s':>12s} {'x torch':>8s}   ({args.repeats} runs each)")
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"{name:32s} {median:9.2f} {min(ts):5.2f}-{max(ts):5.2f} {median / floor:8.2f}")


if __name__ == "__main__":
    main()
