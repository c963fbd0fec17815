"""Summarise a py-spy profile in collapsed-stack form (``py-spy record --format raw``):
the functions with the most samples on top of the stack (self) and on the stack at all
(inclusive), and a breakdown by package.

    .venv/bin/python bench/profile_top.py /tmp/crud-profile.txt [--top 10]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# "function (path/to/file.py:123)" or "function (path/to/file.py)"
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+?)(?::\d+)?\)$")
MAX_LINES = 5_000_000
# With --subprocesses, each stack starts with 'process PID:"command line"' frames, and a
# command line may itself hold a ';'.
PROCESS_FRAMES = re.compile(r'^(?:process \d+:"[^"]*";)+')

PACKAGES = (
    ("coffre/fhir/_schema_r4", "validation (fastjsonschema, generated)"),
    ("coffre/", "coffre"),
    ("sqlite3", "sqlite3"),
    ("cryptography", "cryptography"),
    ("starlette", "starlette"),
    ("uvicorn", "uvicorn"),
    ("httptools", "httptools"),
    ("orjson", "orjson"),
    ("asyncio", "asyncio"),
    ("anyio", "anyio"),
    ("multiprocessing", "multiprocessing"),
    ("threading", "threading"),
)


def frame_key(frame: str, lines: bool = False) -> tuple[str, str]:
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    path = match.group("file")
    if lines:
        line = frame.strip().rpartition(":")[2].rstrip(")")
        path = f"{path}:{line}" if line.isdigit() else path
    short = path.split("site-packages/")[-1].split("/work/main/")[-1]
    short = re.sub(r"^.*/lib/python3\.\d+/", "", short)
    return match.group("func"), short


def package_of(path: str) -> str:
    for needle, name in PACKAGES:
        if needle in path:
            return name
    return path.split("/")[0] or "other"


def summarise(path: Path, top: int, only: str | None = None) -> str:
    self_counts: Counter[tuple[str, str]] = Counter()
    self_lines: Counter[tuple[str, str]] = Counter()
    inclusive: Counter[tuple[str, str]] = Counter()
    by_package: Counter[str] = Counter()
    total = 0
    with path.open(errors="replace") as file:
        for n, line in enumerate(file):
            if n >= MAX_LINES:
                break
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            stack = PROCESS_FRAMES.sub("", stack)
            if only and only not in stack:
                continue
            frames = [
                f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))
            ]
            if not frames:
                continue
            keys = [frame_key(f) for f in frames]
            total += count
            self_counts[keys[-1]] += count
            self_lines[frame_key(frames[-1], lines=True)] += count
            for key in set(keys):
                inclusive[key] += count
            # The package of the deepest frame outside the standard wrappers.
            by_package[package_of(keys[-1][1])] += count
    if total == 0:
        return f"{path}: no samples"
    which = f"stacks through {only!r}" if only else "all threads of all server processes"
    out = [f"{path}: {total:,} samples ({which})", ""]
    out.append(f"Top {top} by self samples (on top of the stack):")
    for (func, where), count in self_counts.most_common(top):
        out.append(f"  {count / total:6.1%}  {func}  ({where})")
    out.append("")
    out.append(f"Top {top} source lines by self samples:")
    for (func, where), count in self_lines.most_common(top):
        out.append(f"  {count / total:6.1%}  {func}  ({where})")
    out.append("")
    out.append(f"Top {top * 2} Coffre functions by inclusive samples (anywhere on the stack):")
    coffre = Counter(
        {
            key: count
            for key, count in inclusive.items()
            if key[1].startswith("coffre/")
            and not key[1].startswith(("coffre/cli/", "coffre/__main__"))
        }
    )
    for (func, where), count in coffre.most_common(top * 2):
        out.append(f"  {count / total:6.1%}  {func}  ({where})")
    out.append("")
    out.append("Self samples by package:")
    for name, count in by_package.most_common():
        out.append(f"  {count / total:6.1%}  {name}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", type=Path, help="py-spy --format raw output")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument(
        "--only",
        default=None,
        help="keep only stacks with a frame containing this text; for a profile taken with"
        " --idle, 'Server.run' keeps the workers' event-loop threads (their waits included)",
    )
    args = parser.parse_args()
    print(summarise(args.profile, args.top, args.only))


if __name__ == "__main__":
    main()
