"""Benchmark: read, check and route a large return (default 100,000 rows); prints time and peak memory.

    python benchmarks/large_return.py [ROWS]

Not a test: it measures and prints, for comparing changes (the design asks for a 100,000-row file in
bounded memory). The people are invented; their postcodes are real.
"""

from __future__ import annotations

import resource
import sys
import time
from types import MappingProxyType

from gateway.demo.sample import people, workbook
from gateway.reference.postcodes import Directory
from gateway.returns.read import read_return
from gateway.returns.route import route
from gateway.returns.validate import validate
from gateway.rules import LONDON, Borough, Rules


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(rows: int) -> None:
    directory = Directory()
    crowd = people(directory, {"E09000019": 100, "E09000007": 100, "E09000012": 100})
    cells = [p.cells() for p in crowd]
    data = workbook("Benchmark College", "10001234", [cells[i % len(cells)] for i in range(rows)])
    rules = Rules(MappingProxyType({c: Borough(c, n, ()) for c, n in LONDON.items()}), MappingProxyType({}))
    print(f"workbook: {rows:,} rows, {len(data) / 1e6:.1f} MB; peak memory before reading {peak_mib():.0f} MiB")
    start = time.perf_counter()
    table = read_return(data)
    read_at = time.perf_counter()
    checked = validate(table, None)
    checked_at = time.perf_counter()
    routed = route(table, checked.accepted, rules, directory)
    done = time.perf_counter()
    print(f"read {read_at - start:.1f} s, validate {checked_at - read_at:.1f} s, route {done - checked_at:.1f} s; "
          f"{routed.forwarded:,} rows routed; peak memory {peak_mib():.0f} MiB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
