"""Voice Gateway SMS pipes: ids, the relay of the caller's messages and the failure events.

While a pipe is open, each inbound SMS/MMS of its (tenant, user) becomes a `pipe_relay` job that POSTs the
relay body (the caller's message, its media and ids) to the pipe's `callbackURL`; a message sent through the
pipe that the outbox gives up on becomes a `pipe_event` job that POSTs a failure event there. Both are durable
jobs: retried with backoff while Voice Gateway is down, dead-lettered (and replayable) after the last attempt,
never dropped, never given to the engine. Jobs of one pipe pair run in order.

A callback URL names a host the caller chose, so it may reach only public addresses, the hosts and networks the
operator lists in `pipes.allowedCallbackHosts`, and with `pipes.allowPrivateCallbacks` private networks; never
link-local or cloud metadata addresses. That is checked when the pipe is created and again, on the addresses
actually connected to, at every relay (`netguard.GuardedHttp`): a relay to a host that has since moved somewhere
forbidden is dead-lettered at once, not retried.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp
import structlog

from sms_gateway.config.model import Config, normalise_number
from sms_gateway.jobs import JobKind, Outcome, RetryPolicy
from sms_gateway.model import JSON, InboundMessage
from sms_gateway.netguard import DestinationPolicy, GuardedHttp, refusal_in, url_host
from sms_gateway.store.base import Job, Pipe, Store

log = structlog.get_logger("sms_gateway.pipes")

PIPE_RELAY = "pipe_relay"
PIPE_EVENT = "pipe_event"
DEFAULT_EXPIRATION_SECONDS = 3600
MAX_EXPIRATION_SECONDS = 86400
# About six minutes of retries (1, 2, 4, ... capped at 60 s) before a relay is dead-lettered.
RELAY_POLICY = RetryPolicy(max_attempts=10, backoff_base=1.0, backoff_cap=60.0)
RELAY_TIMEOUT_SECONDS = 5.0
# Voice Gateway answers that mean "try again later"; any other 4xx is final.
_RETRY_STATUSES = frozenset({408, 425, 429})


def new_pipe_id() -> str:
    """Random and kept server-side: the id says nothing about the numbers it stands for."""
    return secrets.token_urlsafe(24)


def callback_destinations(config: Config) -> DestinationPolicy:
    """Where relays may go besides public addresses: what the operator allowed (link-local and metadata never)."""
    return DestinationPolicy.allowing(
        config.pipe_allowed_callback_hosts,
        allow_private=config.allow_private_callbacks,
        hint="pipes.allowedCallbackHosts can allow it"
        + ("" if config.allow_private_callbacks else ", or pipes.allowPrivateCallbacks a private network"),
    )


def callback_url_problem(url: str) -> str | None:
    """None when `url` is an http(s) URL with a host; where it points is `PipeRelay.callback_problem`'s."""
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return "must not contain whitespace or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "must be an http or https URL"
    if not host:
        return "has no host"
    return None


def pipe_order_key(tenant_number: str, user_number: str) -> str:
    return f"pipe:{normalise_number(tenant_number)}:{user_number}"


def relay_body(pipe: Pipe, message: InboundMessage) -> JSON:
    return {
        "smsPipeID": pipe.pipe_id,
        "tenantPhoneNumber": pipe.tenant_number,
        "userPhoneNumber": pipe.user_number,
        "smsMessage": message.text,
        "smsMedia": [m.to_state() for m in message.media],
        "messageID": message.message_id,
    }


def relay_job(pipe: Pipe, message: InboundMessage) -> Job:
    """The relay of one inbound message. Its id derives from the message id, so a message processed twice
    (after a crash) is relayed once; it carries the callback URL, so a message that arrived while the pipe was
    open reaches that call even if the pipe is deleted before the relay runs."""
    payload: JSON = {"callbackURL": pipe.callback_url, "body": relay_body(pipe, message)}
    return Job(
        f"relay:{message.provider}:{message.message_id}",
        PIPE_RELAY,
        payload,
        order_key=pipe_order_key(pipe.tenant_number, pipe.user_number),
        run_at=time.time(),
    )


def pipe_send_extra(pipe: Pipe) -> JSON:
    """What a send job through the pipe carries, so its failure can be reported to the pipe's callback."""
    return {
        "pipeId": pipe.pipe_id,
        "pipeCallbackURL": pipe.callback_url,
        "pipeTenantNumber": pipe.tenant_number,
        "pipeUserNumber": pipe.user_number,
    }


def failure_event_job(send: Job, code: str, message: str) -> Job | None:
    """The failure event of a send job that went through a pipe (None for other sends)."""
    p = send.payload
    pipe_id, callback = p.get("pipeId"), p.get("pipeCallbackURL")
    if not isinstance(pipe_id, str) or not isinstance(callback, str):
        return None
    tenant = p.get("pipeTenantNumber") or p["tenantNumber"]
    user = p.get("pipeUserNumber") or p["userNumber"]
    body: JSON = {
        "smsPipeID": pipe_id,
        "tenantPhoneNumber": tenant,
        "userPhoneNumber": user,
        "event": "smsFailed",
        "messageID": p["messageId"],
        "error": {"code": code, "message": message},
    }
    return Job(
        f"pipe-event:{p['messageId']}",
        PIPE_EVENT,
        {"callbackURL": callback, "body": body},
        order_key=pipe_order_key(tenant, user),
        run_at=time.time(),
    )


def _retry_after(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class PipeRelay:
    """POSTs relays and failure events to Voice Gateway, through the session that reaches only allowed hosts."""

    def __init__(
        self,
        store: Store,
        http: GuardedHttp,
        notify: Callable[[], None] = lambda: None,
        policy: RetryPolicy | None = None,
        timeout: float = RELAY_TIMEOUT_SECONDS,
    ) -> None:
        self.store = store
        self.http = http
        self.notify = notify
        self.policy = policy or RELAY_POLICY
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def callback_problem(self, url: str) -> str | None:
        """Why `url` cannot be a pipe's callback (its form, or where its host points now), or None."""
        problem = callback_url_problem(url)
        if problem is not None:
            return problem
        host = url_host(url)
        if host is None:
            return "is not a valid URL"
        refusal = await self.http.refusal(host)
        return None if refusal is None else f"host {host} {refusal}"

    def job_kinds(self) -> dict[str, JobKind]:
        return {
            PIPE_RELAY: JobKind(self.handle, self.policy, self._dead),
            PIPE_EVENT: JobKind(self.handle, self.policy, self._dead),
        }

    async def handle(self, job: Job) -> Outcome:
        url, body = job.payload["callbackURL"], job.payload["body"]
        pipe_id = body.get("smsPipeID")
        try:
            async with self.http.session.post(url, json=body, timeout=self.timeout, allow_redirects=False) as response:
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            refused = refusal_in(exc)
            if refused is not None:  # where the host points now is forbidden: retrying would not change that
                log.error("pipe_callback_refused", job_id=job.job_id, pipe_id=pipe_id, error=str(refused))
                return Outcome.failed(f"callbackURL refused: {refused}")
            log.warning(
                "pipe_callback_unreachable",
                job_id=job.job_id,
                pipe_id=pipe_id,
                attempt=job.attempts,
                error=type(exc).__name__,
            )
            return Outcome.retry(f"unreachable: {type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            log.info("pipe_callback_delivered", job_id=job.job_id, kind=job.kind, pipe_id=pipe_id)
            return Outcome.done()
        error = f"callback answered HTTP {status}"
        if status >= 500 or status in _RETRY_STATUSES:
            return Outcome.retry(error, retry_after=retry_after)
        return Outcome.failed(error)

    async def _dead(self, job: Job, error: str) -> None:
        # The job stays as a dead letter (an operator can replay it); it never falls back to the engine.
        log.error(
            "pipe_callback_given_up",
            job_id=job.job_id,
            kind=job.kind,
            pipe_id=job.payload["body"].get("smsPipeID"),
            error=error,
        )

    async def on_send_failed(self, send: Job, code: str, message: str) -> None:
        """`Outbox.on_failed` callback: report a failed pipe send to the pipe's callback."""
        event = failure_event_job(send, code, message)
        if event is None:
            return
        if await self.store.enqueue_job(event):
            log.info(
                "pipe_send_failed_reported",
                pipe_id=send.payload.get("pipeId"),
                message_id=send.payload.get("messageId"),
                code=code,
            )
            self.notify()
