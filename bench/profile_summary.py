"""Summarise a py-spy speedscope profile: top functions by own and by cumulative time, and time by area.

    .venv/bin/python bench/profile_summary.py profile.json [--top 15]

Reads the `--format speedscope` output of `py-spy record` (with or without `--native`; idle samples are
not recorded by py-spy unless `--idle`, so the shares are of the time the process was on the CPU or
holding the GIL). Own time: the function is the innermost frame of the sample. Cumulative: the function is
anywhere on the stack (counted once per sample).

Areas: each sample goes to the innermost frame that belongs to one (see AREAS: first match wins, from the
innermost frame outward); native frames of the C libraries (OpenSSL, orjson, pydantic-core, cel-cpp) make
this precise with `--native`; without it the time in a C extension is charged to the Python function that
called it.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

# (area, regex over "name file") checked from the innermost frame outward; the first that matches wins.
AREAS: list[tuple[str, str]] = [
    ("socket reads and writes (syscalls)", r"^(write|read|writev|send|recv|sendmsg|recvmsg|sendto|recvfrom) "),
    ("TLS (OpenSSL, ssl module, uvloop SSL protocol)",
     r"(?i)\bSSL_|ssl3_|tls1?3?_|ossl_|\bEVP_|aesni|gcm|chacha|poly1305|sha256|ecp_nistz|\bBN_|"
     r"libssl|libcrypto|_ssl\.|[/ ]ssl\.py|sslproto|SSLProtocol|__pyx_.*SSL"),
    ("JSON (orjson)", r"(?i)orjson|\bjson[/.]"),
    ("pydantic (review and settings models)", r"(?i)pydantic"),
    ("CEL engine (cel-expr-python / cel-cpp)", r"(?i)cel_expr_python|\bcel::|google::api::expr|_cel\.|libcel"),
    ("CEL boundary (webhook/policies/cel.py, native.py: activation, conversion)",
     r"webhook/policies/(cel|native)\.py"),
    ("policy evaluation (webhook/policies other, admission.py, patches.py, Python policies)",
     r"webhook/policies/|webhook/admission\.py|webhook/patches\.py|webhook/authoring\.py|/policies/|jsonpatch"),
    ("events (spool, recorder)", r"webhook/events/"),
    ("metrics (prometheus_client)", r"prometheus_client|webhook/metrics\.py"),
    ("review parsing and response (webhook/reviews.py)", r"webhook/reviews\.py"),
    ("HTTP edge (webhook/server.py, serving.py)", r"webhook/server\.py|webhook/serving\.py"),
    ("HTTP parsing and ASGI server (httptools, uvicorn protocols)", r"(?i)httptools|llhttp|uvicorn/"),
    ("framework (starlette, fastapi)", r"(?i)starlette/|fastapi/|anyio/"),
    ("event loop (uvloop, asyncio, libuv)", r"(?i)uvloop|asyncio/|\buv_|uv__|libuv|epoll"),
    ("logging", r"logging/"),
]
_COMPILED = [(area, re.compile(pattern)) for area, pattern in AREAS]


def _label(frame: dict[str, Any]) -> str:
    name = frame.get("name", "?")
    file = frame.get("file") or ""
    short = re.sub(r".*/(site-packages|lib/python3\.\d+)/", "", file)
    short = re.sub(r".*/work/main/", "", short)
    if len(name) > 100:  # C++ template names
        name = name[:97] + "..."
    return f"{name} ({short})" if short else name


def _area(frame: dict[str, Any]) -> str | None:
    text = f"{frame.get('name', '')} {frame.get('file') or ''}"
    for area, pattern in _COMPILED:
        if pattern.search(text):
            return area
    return None


def summarize(path: Path, *, top: int = 15, thread: str = "MainThread",
              below: str = "create_app.<locals>.review", spine: float = 0.85) -> dict[str, Any]:
    """`thread`: the thread to summarise (the event loop's; "" for all). py-spy's idle detection misses some
    waits with --native (a thread-pool worker blocked on its queue shows as busy), so other threads are
    only counted in `other_threads`. Frames on at least `spine` of the stacks are left out of the cumulative
    list (runpy, the CLI, uvicorn's and the event loop's run, the ASGI middleware chain: under everything,
    so they say nothing). `below`: a function name; `inside` lists cumulative time of the
    functions called from it (the admission handler by default), shares of all samples."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    labels = [_label(frame) for frame in frames]  # one function at several lines is one row
    frame_areas = [_area(frame) for frame in frames]
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0.0
    samples = 0
    other_threads: dict[str, int] = {}
    for profile in data["profiles"]:
        if profile.get("type") != "sampled":
            continue
        if thread and f'"{thread}"' not in profile.get("name", ""):
            other_threads[profile.get("name", "?")] = len(profile["samples"])
            continue
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            if not stack:
                continue
            samples += 1
            total += weight
            own[labels[stack[-1]]] += weight  # speedscope: outermost frame first, innermost last
            for label in {labels[index] for index in stack}:
                cumulative[label] += weight
            entry = next((position for position, index in enumerate(stack) if frames[index].get("name") == below),
                         None)
            if entry is not None:
                inside[labels[stack[entry]]] += weight
                for label in {labels[index] for index in stack[entry + 1:]}:
                    inside[label] += weight
            area = next((found for index in reversed(stack) if (found := frame_areas[index]) is not None),
                        "other (interpreter, startup, unclassified)")
            areas[area] += weight

    def table(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": key, "share": round(value / total, 4)} for key, value in counter.most_common(top)]

    left_out = {key for key, value in cumulative.items() if value >= spine * total}
    for key in left_out:
        del cumulative[key]
    return {"thread": thread or "all", "samples": samples, "seconds": round(total, 2),
            "other_threads": other_threads, "own": table(own), "cumulative": table(cumulative),
            "left_out_of_cumulative": len(left_out), "spine": spine, "below": below, "inside": table(inside),
            "areas": [{"area": area, "share": round(value / total, 4)} for area, value in areas.most_common()]}


def print_summary(summary: dict[str, Any]) -> None:
    print(f"py-spy: {summary['samples']} samples of thread {summary['thread']} ({summary['seconds']} s not idle); "
          f"not counted: {summary['other_threads'] or 'no other thread'}")
    for key, title in (("own", "own time"), ("cumulative", "cumulative time")):
        note = (f" (without the {summary['left_out_of_cumulative']} frames on >= {summary['spine']:.0%} of the "
                "stacks: runpy, cli, uvicorn's and the event loop's run, the ASGI middleware chain)"
                if key == "cumulative" else "")
        print(f"\ntop {len(summary[key])} by {title}{note}:")
        for row in summary[key]:
            print(f"  {row['share'] * 100:5.1f}%  {row['function']}")
    if summary["inside"]:
        print(f"\ncumulative time inside {summary['below']} (the admission handler), shares of all samples:")
        for row in summary["inside"]:
            print(f"  {row['share'] * 100:5.1f}%  {row['function']}")
    print("\ntime by area (innermost frame that belongs to an area):")
    for row in summary["areas"]:
        print(f"  {row['share'] * 100:5.1f}%  {row['area']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--thread", default="MainThread", help='thread name ("" for all threads)')
    arguments = parser.parse_args()
    print_summary(summarize(arguments.profile, top=arguments.top, thread=arguments.thread))


if __name__ == "__main__":
    main()
