"""The outbox: every message to a user is a `send` job, so it survives a crash, is retried with backoff
within the provider's limits, goes at its sender's pace (`ratelimit`), and is sent at most once per id."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog

from sms_gateway.config.model import normalise_number
from sms_gateway.jobs import JobKind, Outcome, RetryPolicy
from sms_gateway.metrics import Metrics, warn_if_slow
from sms_gateway.model import JSON, OutboundMessage, SendResult
from sms_gateway.providers.base import TIMEOUT, Sender
from sms_gateway.ratelimit import MAX_HOLD_SECONDS, AcceptedRate, SenderRate, sender_cap
from sms_gateway.store.base import Job, OutboundRecord, Store

log = structlog.get_logger("sms_gateway.outbox")

SEND = "send"
# A wait for the sender's next slot longer than this goes back to the queue instead of holding a worker slot,
# and takes its slot when it comes back, at the sender's pace then (which may have grown since).
MAX_INLINE_WAIT_SECONDS = 2.0
# A throttled send without a Retry-After comes back after this.
THROTTLED_RETRY_SECONDS = 0.5


def message_id_for(turn_id: str, index: int) -> str:
    """Stable ids: re-running the same turn after a crash produces the same ids, which the outbox ignores."""
    return "mg" + hashlib.sha256(f"{turn_id}/{index}".encode()).hexdigest()[:32]


def send_job(message: OutboundMessage, error_to: tuple[str, str] | None, extra: JSON | None = None) -> Job:
    payload: JSON = {
        "messageId": message.message_id,
        "tenantNumber": message.tenant_number,
        "userNumber": message.user_number,
        "text": message.text,
        "mediaUrls": list(message.media_urls),
        "sessionId": message.session_id,
        "errorTo": list(error_to) if error_to else None,
        **(extra or {}),
    }
    # One queue per conversation, so the parts of a split message arrive in order.
    order_key = f"{normalise_number(message.tenant_number)}:{message.user_number}"
    # Its attempts say when their request leaves (`Outbox.handle`).
    return Job(message.message_id, SEND, payload, order_key=order_key, run_at=time.time(), begun_attempt=0)


# The outbox's own retry reasons: after these nothing was sent.
RATE_LIMITED = "rateLimited"
UNKNOWN_TENANT = "unknownTenant"
# A look-up at the provider that answered nothing: the attempt before it is still unknown.
LOOKUP_FAILED = "lookupFailed"


def may_have_been_sent(last_error: str | None, sender: Sender) -> bool:
    """Whether the attempt that ended with `last_error` may have left the message at the provider, so the next
    attempt must ask the provider before sending it again."""
    if last_error is None:
        return True  # the attempt never finished: the process died during it
    code = error_parts(last_error)[0]
    if code in (RATE_LIMITED, UNKNOWN_TENANT):
        return False
    return code == LOOKUP_FAILED or sender.may_have_sent(code)


def _record(
    message: OutboundMessage, provider_id: str | None, pipe: JSON | None, first_attempt_at: float
) -> OutboundRecord:
    return OutboundRecord(
        message.message_id,
        message.tenant_number,
        message.user_number,
        message.session_id,
        provider_id,
        pipe,
        first_attempt_at,
    )


def error_parts(error: str) -> tuple[str, str]:
    code, _, message = error.partition(": ")
    return code, message or code


class Outbox:
    def __init__(
        self,
        store: Store,
        senders: Mapping[str, Sender],
        metrics: Metrics,
        callback_base: Callable[[], str | None],
        *,
        max_attempts: Mapping[str, int] | None = None,
        rates: dict[str, SenderRate] | None = None,  # the optional hard caps (`rateLimits`)
        backoff_base: float = 0.5,
        settle_seconds: Mapping[str, float] | None = None,
        retry_interval_seconds: Mapping[str, float] | None = None,
        latency_threshold_ms: int = 0,
    ) -> None:
        self.store = store
        self.senders = senders
        self.metrics = metrics
        # The gateway's public base URL when known: providers address delivery statuses of a message to it.
        self.callback_base = callback_base
        self.max_attempts = dict(max_attempts or {})
        self.rates = rates
        self.accepted = AcceptedRate()
        self.backoff_base = backoff_base
        # Per tenant: how long after a timed-out send the provider has surely finished with it.
        self.settle_seconds = dict(settle_seconds or {})
        # Per tenant: the least wait before a retried send (IBM's smsProviderRetryInterval).
        self.retry_interval_seconds = dict(retry_interval_seconds or {})
        self.latency_threshold_ms = latency_threshold_ms
        # Called when a message is given up on (dead-lettered): (job, error code, error message).
        self.on_failed: list[Callable[[Job, str, str], Awaitable[None]]] = []

    def job_kind(self) -> JobKind:
        attempts = max(self.max_attempts.values(), default=3)
        return JobKind(self.handle, RetryPolicy(max_attempts=attempts, backoff_base=self.backoff_base), self.dead)

    async def handle(self, job: Job) -> Outcome:
        p = job.payload
        message = OutboundMessage(
            message_id=p["messageId"],
            tenant_number=p["tenantNumber"],
            user_number=p["userNumber"],
            text=p["text"],
            media_urls=tuple(p["mediaUrls"]),
            session_id=p.get("sessionId"),
        )
        tenant_key = normalise_number(message.tenant_number)
        sender = self.senders.get(tenant_key)
        if sender is None:
            return Outcome.failed(f"{UNKNOWN_TENANT}: no tenant is configured for {message.tenant_number}")
        limit = self.max_attempts.get(tenant_key)
        pipe = {k: v for k, v in p.items() if k.startswith("pipe")} or None
        previous = await self.store.find_outbound(message.message_id) if job.attempts > 1 else None
        if previous is not None and previous.provider_message_id is not None:
            return Outcome.done()  # sent and recorded, the process died before the job was marked done
        # An earlier attempt's outcome is unknown, unless none of them began (killed before its request left).
        if previous is not None and job.begun_attempt != 0 and may_have_been_sent(job.last_error, sender):
            try:
                sid = await sender.find_sent(message, since=previous.first_attempt_at or 0.0)
            except LookupError as exc:
                return Outcome.retry(f"{LOOKUP_FAILED}: {exc}")
            if sid is not None:
                log.info(
                    "send_found_at_provider",
                    message_id=message.message_id,
                    provider_id=sid,
                    reason="an earlier attempt's outcome was unknown; not sending it twice",
                )
                return Outcome.done(sent=_record(message, sid, pipe, previous.first_attempt_at or time.time()))
        slot_key = f"send:{tenant_key}"
        now = time.time()
        first_attempt_at = previous.first_attempt_at if previous and previous.first_attempt_at else now
        # Recorded with the send slot, before the request leaves: a delivery status can arrive before the
        # provider's answer, and a crash from here on is an unknown outcome that the next attempt checks at the
        # provider before sending again (a deferred attempt leaves the job's last error as it was). The attempt
        # is marked begun (`Store.begin_job`) as its request leaves, with the slot when there is no wait: a
        # process killed before that point has sent nothing, and its job is taken over at once. Both raise
        # LeaseLost if it was (this process stalled and was taken for dead): nothing is sent, and the job runner
        # leaves the job to its new owner.
        wait = await self.store.begin_send(
            slot_key,
            sender_cap(message.tenant_number, self.rates),
            now,
            _record(message, None, pipe, first_attempt_at),
            MAX_INLINE_WAIT_SECONDS,
            job=job,
        )
        if wait > MAX_INLINE_WAIT_SECONDS:
            return Outcome.defer(
                f"{RATE_LIMITED}: waiting for the sender's next slot", wait - MAX_INLINE_WAIT_SECONDS / 2
            )
        if wait > 0:
            await asyncio.sleep(wait)
            await self.store.begin_job(job)
        started = time.perf_counter()
        result = await sender.send(message, self.callback_base())
        elapsed = time.perf_counter() - started
        self.metrics.provider_latency.labels(sender.kind).observe(elapsed)
        warn_if_slow("provider", elapsed, self.latency_threshold_ms, message.session_id)
        kind = "mms" if message.media_urls else "sms"
        if result.ok:
            self.accepted.accepted(tenant_key)
            self.metrics.sends.labels("sent", kind).inc()
            log.info(
                "message_sent",
                message_id=message.message_id,
                provider=sender.kind,
                provider_id=result.provider_message_id,
                session_id=message.session_id,
                media=len(message.media_urls),
                user=message.user_number,
            )
            # Recorded with the job's completion, in one write: a crash before it leaves the job leased and the
            # record without the provider's id, so the next attempt asks the provider before sending again.
            return Outcome.done(sent=_record(message, result.provider_message_id, pipe, first_attempt_at))
        if result.throttled:
            return await self._throttled(message, result, slot_key, tenant_key, now, kind)
        self.metrics.sends.labels("failed", kind).inc()
        self.metrics.errors.labels("send").inc()
        error = f"{result.error_code or 'sendFailed'}: {result.error_message or 'send failed'}"
        log.warning(
            "send_failed",
            message_id=message.message_id,
            provider=sender.kind,
            code=result.error_code,
            error=result.error_message,
            outcome=result.outcome.value,
            http_status=result.http_status,
            attempt=job.attempts,
            session_id=message.session_id,
        )
        if result.retryable and (limit is None or job.attempts < limit):
            retry_after = result.retry_after
            interval = self.retry_interval_seconds.get(tenant_key)
            if interval is not None:
                retry_after = max(retry_after or 0.0, interval)
            if result.error_code == TIMEOUT:
                # The provider may still be creating the message: wait until it surely has, so the next
                # attempt's look-up finds it instead of sending it again.
                retry_after = max(retry_after or 0.0, self.settle_seconds.get(tenant_key, 0.0))
            return Outcome.retry(error, retry_after=retry_after)
        return Outcome.failed(error)

    async def _throttled(
        self, message: OutboundMessage, result: SendResult, slot_key: str, tenant_key: str, paced_at: float, kind: str
    ) -> Outcome:
        """The provider refused the send (whose slot was taken at `paced_at`) for its sender's rate: nothing was
        sent, so the job is deferred (it counts toward no retry limit) and the sender's shared pace slows down."""
        self.metrics.sends.labels("throttled", kind).inc()
        pace = await self.store.slow_sender(
            slot_key, time.time(), paced_at, result.retry_after, self.accepted.per_second(tenant_key)
        )
        log.info(
            "send_throttled",
            message_id=message.message_id,
            code=result.error_code,
            retry_after=result.retry_after,
            pace_per_second=round(pace.rate, 2),
            session_id=message.session_id,
        )
        run_in = (
            min(result.retry_after, MAX_HOLD_SECONDS) if result.retry_after is not None else THROTTLED_RETRY_SECONDS
        )
        return Outcome.defer(f"{result.error_code or 'throttled'}: {result.error_message or 'throttled'}", run_in)

    async def dead(self, job: Job, error: str) -> None:
        code, message = error_parts(error)
        error_to = job.payload.get("errorTo")
        if error_to:
            await self.store.push_sms_error(
                error_to[0], error_to[1], {"code": code, "message": message, "messageID": job.payload["messageId"]}
            )
        for callback in self.on_failed:
            await callback(job, code, message)
