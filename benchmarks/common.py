"""What the benchmark processes share: the tenant and Twilio account, signed inbound forms, percentiles and
readings of /proc (CPU time, RSS) for the processes under test."""

from __future__ import annotations

import math
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from twilio.request_validator import RequestValidator

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "bench-twilio-auth-token-0000000000"
TENANT = "+15005550001"
WORKSPACE = "bench-ws"
ENGINE_USER = "bench-engine"
ENGINE_PASSWORD = "bench-engine-password"
WEBHOOK_PATH = "/sms.receiver/SmsRecv"
MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'

# The load generator writes "bench <id> ..." in each inbound Body; the fake engine echoes the text, so the
# reply that reaches the fake provider carries the id back.
BODY_ID_RE = re.compile(r"bench ([A-Za-z0-9-]+)")

MEDIA_TYPES = ("image/jpeg", "image/png", "video/mp4", "audio/amr")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def user_for_sender(sender: int) -> str:
    """Sender i talks as its own user, so each sender is one conversation (one session)."""
    return f"+1555000{sender:04d}"


def unique_user(n: int) -> str:
    """The n-th of up to ten million distinct users (to seed sessions)."""
    return f"+1556{n:07d}"


def media_url(n: int) -> str:
    return f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM{uuid.uuid4().hex}/Media/ME{n:032x}"


def inbound_form(message_sid: str, user: str, text: str, media: int = 2, tenant: str = TENANT) -> dict[str, str]:
    """An inbound MMS webhook with every field Twilio sends (a real one is this size: ~1.3 KB with 2 media)."""
    form = {
        "ToCountry": "US",
        "ToState": "CA",
        "SmsMessageSid": message_sid,
        "NumMedia": str(media),
        "ToCity": "SAN FRANCISCO",
        "FromZip": "94105",
        "SmsSid": message_sid,
        "FromState": "CA",
        "SmsStatus": "received",
        "FromCity": "SAN FRANCISCO",
        "Body": text,
        "FromCountry": "US",
        "To": tenant,
        "MessagingServiceSid": "MG" + "0" * 32,
        "ToZip": "94105",
        "NumSegments": "1",
        "ReferralNumMedia": "0",
        "MessageSid": message_sid,
        "AccountSid": ACCOUNT_SID,
        "From": user,
        "ApiVersion": "2010-04-01",
    }
    for n in range(media):
        form[f"MediaContentType{n}"] = MEDIA_TYPES[n % len(MEDIA_TYPES)]
        form[f"MediaUrl{n}"] = media_url(n)
    return form


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """One webhook, encoded and signed ahead of time: posting it costs the load generator no crypto.

    `raw` is the whole HTTP/1.1 request (request line, headers, body) for the load generator's raw client.
    """

    request_id: str
    url: str
    body: bytes
    headers: dict[str, str]
    raw: bytes


def signed_webhook(
    public_base: str, request_id: str, user: str, media: int = 2, validator: RequestValidator | None = None
) -> SignedRequest:
    url = public_base.rstrip("/") + WEBHOOK_PATH
    sid = ("MM" if media else "SM") + uuid.uuid4().hex
    form = inbound_form(sid, user, f"bench {request_id} photo attached", media)
    signature = (validator or RequestValidator(AUTH_TOKEN)).compute_signature(url, form)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": str(signature),
        "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        "User-Agent": "TwilioProxy/1.1",
    }
    body = urlencode(form).encode()
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    return SignedRequest(request_id, url, body, headers, head.encode("latin-1") + body)


# ------------------------------------------------------------------------------ statistics


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence; None when it is empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def fsync_latency(directory: Path, count: int = 200) -> dict[str, float | int | None]:
    """How long this disk takes to make a 4 KiB write durable (write + fsync, as a WAL commit does), in ms: the
    floor under every durable acknowledgement, and on a shared VM it drifts from minute to minute."""
    path = directory / "fsync-probe"
    page = os.urandom(4096)
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for i in range(count):
            started = time.perf_counter()
            os.pwrite(fd, page, (i % 64) * 4096)
            os.fsync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return latency_summary(times)


def latency_summary(seconds: Iterable[float]) -> dict[str, float | int | None]:
    """Milliseconds: count, mean, p50, p90, p99, p99.9 (None below 1,000 samples), max."""
    values = sorted(seconds)
    n = len(values)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return {
        "count": n,
        "mean": ms(sum(values) / n) if n else None,
        "p50": ms(percentile(values, 50)),
        "p90": ms(percentile(values, 90)),
        "p99": ms(percentile(values, 99)),
        "p99.9": ms(percentile(values, 99.9)) if n >= 1000 else None,
        "max": ms(values[-1]) if n else None,
    }


# ------------------------------------------------------------------------------ /proc


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def runqueue_wait_seconds(pid: int) -> float | None:
    """Time the process's threads were ready to run but waited for a CPU (other processes had it)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return total / 1e9


def status_kib(pid: int, field: str) -> int | None:
    """A KiB figure of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, ...); None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kib(pid: int) -> int | None:
    return status_kib(pid, "VmRSS")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat", encoding="ascii") as f:
        parts = [int(v) for v in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return (total - idle) / _CLK_TCK, total / _CLK_TCK
