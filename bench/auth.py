"""What authentication costs per request (docs/dataplane.md, "Speed"): the plain endpoint against the
same data plane with `key_auth`, `jwt` (RS256 and HS256) and `basic_auth`, in one run.

    .venv/bin/python bench/auth.py [--rounds 5] [--duration 5]

Needs `wrk` and `nginx` on PATH (`apt-get install -y wrk nginx`); only 127.0.0.1. Starts, in a temporary
directory, nginx as the upstream (core 1, with wrk) and one data plane per variant (as shipped, access
log on, pinned to core 0), each on a YAML seed with one consumer:

  plain      the endpoint without plugins (the reference)
  key_auth   `X-API-Key: <key>` looked up by its sha256
  jwt-rs256  `Authorization: Bearer <RS256 token>` (2048-bit key) selected by `iss`, exp verified
  jwt-hs256  the same with an HS256 secret from the environment
  basic      `Authorization: Basic` against a PBKDF2 hash (600,000 iterations): the hash is verified
             once per worker per minute, then the cached keyed fingerprint answers

Each round measures every variant at 50 connections and at 1 (wrk, 1 thread), interleaved; the table
shows medians; then each variant's req/s as a ratio of `plain`'s from the same run (targets: key_auth
>= 0.85x, jwt-rs256 >= 0.6x, basic >= 0.8x) and CPU time per request (from /proc, at 50 connections).
Every variant is first checked to answer 200 with its credential and 401 without.

Before each measured run the variant answers one request with its credential, then the bench waits a
second (every variant alike). A round takes about a minute, so without this basic_auth's once-a-minute
PBKDF2 (on the request path when the minute is up, in the background when the credential is used in
its last 15 s) would land inside nearly every one of its 4-second runs, 15x its share of a steady
minute. It is reported apart instead: the PBKDF2's time on this machine, and basic's ratio with that
time charged to each minute at the measured rate (`amortized`).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import dataplane_env, parse_wrk, start_upstream, start_variants, warm_up  # noqa: E402
from variants import compare  # noqa: E402

from configdoc.consumers import hash_key, password_matches  # noqa: E402

PROXY_CORE = "0"
LOAD_CORE = "1"
HS_SECRET_ENV = "BENCH_JWT_SECRET"  # noqa: S105 - the name of a variable, not a secret
TARGETS = {"key_auth": 0.85, "jwt-rs256": 0.6, "basic": 0.8}


ITERATIONS = 600_000


def pbkdf2_hash(password: str, iterations: int = ITERATIONS) -> str:
    """Django's `pbkdf2_sha256$<iterations>$<salt>$<base64>` form, which basic_auth credentials hold."""
    salt = secrets.token_hex(11)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode()}"


def wrk(url: str, connections: int, duration: float, headers: dict[str, str]) -> tuple[float, float, float, int]:
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    result = subprocess.run([*argv, url], capture_output=True, text=True, check=True)  # noqa: S603
    return parse_wrk(result.stdout)


def documents(upstream: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]], dict[str, str]]:
    """Per variant: the seed document and the headers a valid client sends; and the environment (the HS secret)."""
    key = secrets.token_urlsafe(32)
    password = secrets.token_urlsafe(16)
    hs_secret = secrets.token_urlsafe(32)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    expires = int(time.time()) + 24 * 3600
    rs_token = jwt.encode({"iss": "bench-rs", "exp": expires, "sub": "bench"}, private, algorithm="RS256")
    hs_token = jwt.encode({"iss": "bench-hs", "exp": expires, "sub": "bench"}, hs_secret, algorithm="HS256")
    consumer = {
        "username": "bench-client",
        "key_auth": [{"key_sha256": hash_key(key), "label": "bench"}],
        "jwt": [
            {"issuer": "bench-rs", "algorithm": "RS256", "public_key": public_pem},
            {"issuer": "bench-hs", "algorithm": "HS256", "secret": {"env": HS_SECRET_ENV}},
        ],
        "basic_auth": [{"username": "bench", "password_hash": pbkdf2_hash(password)}],
    }
    basic = base64.b64encode(f"bench:{password}".encode()).decode()
    variants: dict[str, tuple[dict[str, Any] | None, dict[str, str]]] = {
        "plain": (None, {}),
        "key_auth": ({"key_auth": {"key_names": ["X-API-Key"]}}, {"X-API-Key": key}),
        "jwt-rs256": ({"jwt": {}}, {"Authorization": f"Bearer {rs_token}"}),
        "jwt-hs256": ({"jwt": {}}, {"Authorization": f"Bearer {hs_token}"}),
        "basic": ({"basic_auth": {}}, {"Authorization": f"Basic {basic}"}),
    }
    docs: dict[str, dict[str, Any]] = {}
    for name, (plugins, _) in variants.items():
        endpoint: dict[str, Any] = {"name": "bench", "version": "v1", "default": True, "targets": [{"url": upstream}]}
        document: dict[str, Any] = {"format_version": 1, "breaker_policies": [], "endpoints": [endpoint]}
        if plugins is not None:
            endpoint["plugins"] = plugins
            document.update(format_version=2, consumers=[consumer])
        docs[name] = document
    return docs, {name: headers for name, (_, headers) in variants.items()}, {HS_SECRET_ENV: hs_secret}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench/auth.py: {tool} not found (apt-get install -y wrk nginx)", file=sys.stderr)
            return 2

    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        upstream = start_upstream(stack, work, LOAD_CORE)
        docs, headers, secret_env = documents(upstream)
        bases, pids, _ = start_variants(
            stack,
            work,
            docs,
            PROXY_CORE,
            lambda name, seed, port, admin: dataplane_env(name, seed, port, admin, **secret_env),
        )
        urls = {name: f"{base}/bench/x" for name, base in bases.items()}

        def refused(name: str, url: str, response: httpx.Response) -> None:
            if name != "plain":
                refused = httpx.get(url)
                assert refused.status_code == 401, (name, refused.status_code, refused.text)

        warm_up(urls, lambda name, url: wrk(url, 50, 1, headers[name]), headers, refused)

        def ready(name: str, url: str) -> None:
            assert httpx.get(url, headers=headers[name]).status_code == 200
            time.sleep(1.0)  # a verification that request started (basic_auth) ends before the run

        ratios = compare(
            urls,
            pids,
            lambda name, url, connections: wrk(url, connections, args.duration, headers[name]),
            rounds=args.rounds,
            duration=args.duration,
            core=PROXY_CORE,
            targets=TARGETS,
            ready=ready,
        )
        seconds = pbkdf2_seconds()
        print(
            f"basic: one PBKDF2 ({ITERATIONS:,} iterations) takes {seconds * 1000:.0f} ms here, once a minute per"
            f" credential and worker: amortized over a minute {ratios['basic'] * (1 - seconds / 60):.3f}x of plain"
        )
    return 0


def pbkdf2_seconds() -> float:
    """The median time of basic_auth's check of the bench's hash (configdoc.consumers.password_matches)."""
    stored = pbkdf2_hash("bench-password")
    times = []
    for _ in range(3):
        started = time.perf_counter()
        assert password_matches("bench-password", stored)
        times.append(time.perf_counter() - started)
    return sorted(times)[1]


if __name__ == "__main__":
    raise SystemExit(main())
