"""`python -m tests.bench.page_clients`: people looking at a gateway's status page, as one process.

N live clients (server-sent events, /api/live) and one client polling /api/status every
POLL_MS, all with the page's token, for as long as the process runs. It prints one JSON line
when it starts (`{"k": "ready"}`) and one when it is told to stop (SIGTERM): how many live
updates and polls it got, so the benchmark can show the page was really refreshing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp


async def live(session: aiohttp.ClientSession, url: str, counts: dict[str, int]) -> None:
    async with session.get(url + "/api/live") as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if line.startswith(b"data: "):
                json.loads(line[6:])  # a whole view, parsed as a browser would
                counts["live_updates"] += 1


async def poll(session: aiohttp.ClientSession, url: str, every_s: float, counts: dict[str, int]) -> None:
    while True:
        async with session.get(url + "/api/status") as resp:
            resp.raise_for_status()
            await resp.json()
            counts["polls"] += 1
        await asyncio.sleep(every_s)


async def main(url: str, token: str, sse: int, poll_ms: int) -> None:
    counts = {"live_updates": 0, "polls": 0}
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=None)) as session:
        tasks = [asyncio.create_task(live(session, url, counts)) for _ in range(sse)]
        tasks.append(asyncio.create_task(poll(session, url, poll_ms / 1000, counts)))
        print(json.dumps({"k": "ready"}), flush=True)
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        failed = [t.exception() for t in done if t is not waiter and not t.cancelled() and t.exception()]
    print(json.dumps({"k": "done", **counts, "error": repr(failed[0]) if failed else None}), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token-file", type=Path, required=True)
    ap.add_argument("--sse", type=int, default=8)
    ap.add_argument("--poll-ms", type=int, default=500)
    a = ap.parse_args()
    asyncio.run(main(a.url, a.token_file.read_text().strip(), a.sse, a.poll_ms))
    sys.exit(0)
