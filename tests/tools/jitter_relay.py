#!/usr/bin/env python3
"""jitter_relay - a TCP relay on loopback that delays what the client sends by
a random amount per chunk, as a real network's varying delay would, keeping
the byte order of each connection. Answers flow back at once.

  jitter_relay.py --listen PORT --to HOST:PORT [--min-ms 0] [--max-ms 20]
                  [--seed N] [--max-seconds S] [--port-file FILE]

Only loopback addresses are accepted. Bounded by --max-seconds (default 600).
"""

import argparse
import asyncio
import random
import sys
import time

LOOPBACK = ("127.", "localhost", "::1")


async def pump(reader, writer, delay=None, half_close=False):
    """Forward reader -> writer. With `delay` (a function giving seconds), each
    chunk leaves that long after it came, never before the previous one."""
    last = 0.0
    loop = asyncio.get_running_loop()
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if delay is not None:
                last = max(last, loop.time() + delay())
                if last > loop.time():
                    await asyncio.sleep(last - loop.time())
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.write_eof() if half_close else writer.close()
        except (OSError, RuntimeError):
            pass


def handler(args, rng):
    host, port = args.to.rsplit(":", 1)

    async def on_client(creader, cwriter):
        try:
            ureader, uwriter = await asyncio.open_connection(host, int(port))
        except OSError:
            cwriter.close()
            return
        delay = lambda: rng.uniform(args.min_ms, args.max_ms) / 1000.0  # noqa: E731
        await asyncio.gather(pump(creader, uwriter, delay, half_close=True),
                             pump(ureader, cwriter))
    return on_client


async def main(args):
    rng = random.Random(args.seed)
    server = await asyncio.start_server(handler(args, rng), "127.0.0.1", args.listen)
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write("%d\n" % port)
        import os
        os.rename(args.port_file + ".tmp", args.port_file)
    async with server:
        await asyncio.sleep(args.max_seconds)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--min-ms", type=float, default=0.0)
    p.add_argument("--max-ms", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--max-seconds", type=float, default=600.0)
    p.add_argument("--port-file")
    a = p.parse_args()
    if not a.to.startswith(LOOPBACK) or not (0 <= a.min_ms <= a.max_ms <= 10000):
        sys.exit("jitter_relay: --to must be a loopback address; 0 <= min <= max <= 10000 ms")
    try:
        asyncio.run(main(a))
    except KeyboardInterrupt:
        pass
