"""Print the packages whose version in a fresh resolution differs from the lock: `lock_diff.py LOCK FREEZE`."""

import re
import sys


def pins(path: str) -> dict[str, str]:
    out = {}
    for line in open(path):
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line.strip())
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


locked, fresh = pins(sys.argv[1]), pins(sys.argv[2])
moved = [(n, locked.get(n, "-"), v) for n, v in sorted(fresh.items()) if locked.get(n) != v]
gone = sorted(set(locked) - set(fresh))
for name, old, new in moved:
    print(f"  {name:40s} {old:>16s} -> {new}")
for name in gone:
    print(f"  {name:40s} {locked[name]:>16s} -> (no longer needed)")
print(f"  {len(moved)} moved, {len(gone)} no longer needed, {len(fresh)} resolved")
