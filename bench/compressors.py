"""Compressors on the forwarder's requests: time and size per 512-span request (bench/workload.py).

    .venv/bin/python bench/compressors.py
    .venv/bin/pip install zlib-ng && .venv/bin/python bench/compressors.py   # adds zlib-ng's rows

One thread, the median of ``--repeat`` runs over different requests. It is why the OTLP/HTTP
forwarder gzips with ISA-L at level 1 (enricher/export/otlp_http.py); grpc's gzip is zlib at
its default level, 6 (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from isal import isal_zlib

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.workload import make_requests  # noqa: E402

GZIP_WBITS = 31  # a gzip member, as Content-Encoding: gzip and grpc's gzip send


def gzipper(module, level: int) -> Callable[[bytes], bytes]:
    return lambda data: module.compress(data, level, GZIP_WBITS)


def compressors() -> dict[str, Callable[[bytes], bytes]]:
    found = {f"zlib, level {level}": gzipper(zlib, level) for level in (6, 1)}
    found |= {f"ISA-L, level {level}": gzipper(isal_zlib, level) for level in (0, 1, 3)}
    try:
        from zlib_ng import zlib_ng
    except ImportError:
        pass
    else:
        found |= {f"zlib-ng, level {level}": gzipper(zlib_ng, level) for level in (6, 1)}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--spans", type=int, default=512)
    args = parser.parse_args()
    payloads = make_requests(args.repeat, args.spans)
    print(f"requests of {args.spans} spans, {statistics.mean(map(len, payloads)) / 1000:.1f} KB on average")
    for name, compress in compressors().items():
        times, sizes = [], []
        for payload in payloads:
            started = time.perf_counter()
            compressed = compress(payload)
            times.append(time.perf_counter() - started)
            sizes.append(len(compressed))
            assert zlib.decompress(compressed, GZIP_WBITS) == payload
        print(f"{name:18} {statistics.median(times) * 1000:6.2f} ms  {statistics.mean(sizes) / 1000:5.1f} KB", flush=True)


if __name__ == "__main__":
    main()
