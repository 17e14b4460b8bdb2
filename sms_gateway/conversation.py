"""One conversation turn, end to end: session -> state variables -> engine -> commands -> sends.

Callers (the inbound worker, the session sweeper) guarantee that turns of one session never overlap.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from sms_gateway.actions import TurnPlan, chosen_option, interpret
from sms_gateway.config.model import Config, EngineConfig, TenantConfig
from sms_gateway.context import NO_INPUT_TURN_TEXT, RESPONSE_TIMEOUT_TEXT, build_state, media_fallback_notice
from sms_gateway.engines.base import EngineError, TurnRequest
from sms_gateway.engines.override import InvalidOverride, apply_override
from sms_gateway.engines.registry import EngineRegistry
from sms_gateway.media import HostRefusal, SizeOf, head_content_length, plan_outbound
from sms_gateway.metrics import Metrics, warn_if_slow
from sms_gateway.model import JSON, EngineReply, InboundMessage, Media, MessageLimits, Session, new_id
from sms_gateway.netguard import GuardedHttp
from sms_gateway.outbox import message_id_for, send_job
from sms_gateway.pipes import relay_job
from sms_gateway.store.base import Job, Store

log = structlog.get_logger("sms_gateway.conversation")

# A dialog that keeps asking for no-input turns or keeps switching engines must not loop forever.
MAX_CHAINED_TURNS = 5
MAX_ENGINE_SWITCHES = 3
MMS_UNAVAILABLE = "mmsUnavailable"


@dataclass(slots=True)
class ConversationDeps:
    config: Config
    store: Store
    engines: EngineRegistry
    metrics: Metrics
    media_http: GuardedHttp  # reaches only the media hosts its policy allows; resolves their names
    limits: Callable[[TenantConfig], MessageLimits]  # what one message of the tenant's provider may carry
    notify_outbox: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.time


class Conversations:
    def __init__(self, deps: ConversationDeps) -> None:
        self.deps = deps

    # Entry points ------------------------------------------------------------------------------
    async def handle_inbound(self, message: InboundMessage, *, inbound_key: str | None = None) -> EngineError | None:
        """Run the message's turn; the engine's error when it could not answer it (the user got the failure
        reply), else None.

        With `inbound_key` (the stored message's), a message this returns None for is marked processed, by the
        turn's own last write where there is a turn.
        """
        d = self.deps
        tenant = d.config.tenant_for(message.tenant_number)
        if tenant is None:  # the tenant was removed from the config after the message was stored
            log.warning("inbound_dropped", reason="no tenant", message_id=message.message_id)
            await self._complete(inbound_key)
            return None
        now = d.clock()
        start = await d.store.begin_turn(tenant.phone_number, message.user_number, now)
        if start.pipe is not None:  # during a call: the message belongs to Voice Gateway, never to the engine
            pipe = start.pipe
            if await d.store.enqueue_job(relay_job(pipe, message)):
                d.notify_outbox()
            log.info("inbound_relayed", message_id=message.message_id, pipe_id=pipe.pipe_id, user=message.user_number)
            d.metrics.turns.labels("relayed").inc()
            await self._complete(inbound_key)
            return None
        session, errors = start.session, start.errors
        if session is not None and session.is_expired(now):
            if await self._end_expired(tenant, session, errors):
                errors = []  # the timeout turn gave them to the engine
            session = None
        if session is None:
            if not tenant.allow_session_create_via_sms:
                log.info(
                    "inbound_ignored",
                    reason="no session and allowSessionCreateViaSMS is false",
                    message_id=message.message_id,
                    user=message.user_number,
                )
                d.metrics.turns.labels("no_session").inc()
                for error in errors:  # no turn saw them: they wait for the pair's next one
                    await d.store.push_sms_error(tenant.phone_number, message.user_number, error)
                await self._complete(inbound_key)
                return None
            session = Session.new(tenant.phone_number, message.user_number, tenant.timeout_for_session, now)
            log.info("session_created", session_id=session.session_id, via="sms", user=message.user_number)
        session.last_activity = now
        text = chosen_option(message.text, session.pending_options) or message.text
        self._transcript("in", message.text, session)
        turn_id = f"in:{message.provider}:{message.message_id}"
        failure = await self.run_turn(
            tenant, session, text, message.media, turn_id=turn_id, errors=errors, inbound_key=inbound_key
        )
        d.metrics.turn_latency.observe(max(0.0, d.clock() - message.received_at))
        return failure

    async def _complete(self, inbound_key: str | None) -> None:
        if inbound_key is not None:
            await self.deps.store.complete_inbound(inbound_key)

    async def expire_session(self, tenant_number: str, user_number: str, session_id: str) -> None:
        """The sweeper's job: end a session whose inactivity timeout has passed (if it still has)."""
        tenant = self.deps.config.tenant_for(tenant_number)
        session = await self.deps.store.load_session(tenant_number, user_number)
        if session is None or session.session_id != session_id or not session.is_expired(self.deps.clock()):
            return
        if tenant is None:
            await self.deps.store.delete_session(tenant_number, user_number, session_id)
            return
        await self._end_expired(tenant, session)

    # The turn ----------------------------------------------------------------------------------
    async def run_turn(
        self,
        tenant: TenantConfig,
        session: Session,
        text: str,
        media: Sequence[Media],
        *,
        turn_id: str,
        final: bool = False,
        errors: list[JSON] | None = None,
        inbound_key: str | None = None,
    ) -> EngineError | None:
        """Run the turn and, while the dialog asks for it, the no-input turns that follow it.

        Returns the engine's error when it did not answer the first turn, else None.

        `errors`: the smsErrors for the first turn, already taken from the store (else the turn takes them).
        `inbound_key`: the stored message this turn answers; marked processed with the session's save when the
        engine answered (not with `final`, whose caller ends the session).

        The replies of the last turn are queued with the session's save, in one store operation; those of a turn
        that a no-input turn follows are queued before that one runs.

        `turn_id` names the cause of the turn (an inbound message id, a timeout); the ids of the messages it
        sends derive from it, so running the same turn again after a crash does not send its replies twice.
        """
        failure: EngineError | None = None
        replies: list[Job] = []
        for chained in range(MAX_CHAINED_TURNS):
            if replies:
                await self._queue(replies, session)
            plan = await self._one_turn(
                tenant,
                session,
                text,
                media,
                turn_id=f"{turn_id}#{chained}",
                final=final,
                errors=errors if chained == 0 else None,
                replies=None if final else replies,
            )
            if chained == 0 and isinstance(plan, EngineError):
                failure = plan
            if final:
                return failure
            if isinstance(plan, EngineError) or plan.terminate or not plan.force_no_input:
                break
            text, media = NO_INPUT_TURN_TEXT, ()
        else:
            log.warning("no_input_turns_capped", session_id=session.session_id, limit=MAX_CHAINED_TURNS)
        ended = not isinstance(plan, EngineError) and plan.terminate
        queued = await self.deps.store.end_turn(
            session, ended=ended, inbound_key=inbound_key if failure is None else None, jobs=replies
        )
        self._queued(queued, replies, session)
        if ended:
            log.info("session_ended", session_id=session.session_id, reason="terminateSession")
        return failure

    async def _queue(self, jobs: list[Job], session: Session) -> None:
        queued = 0
        for job in jobs:
            queued += await self.deps.store.enqueue_job(job)
        self._queued(queued, jobs, session)
        jobs.clear()

    def _queued(self, queued: int, jobs: list[Job], session: Session) -> None:
        if queued:
            self.deps.notify_outbox()
        if queued < len(jobs):  # the turn ran before and queued them then (a crash, a lost lease)
            log.info("send_already_queued", count=len(jobs) - queued, session_id=session.session_id)

    async def _one_turn(
        self,
        tenant: TenantConfig,
        session: Session,
        text: str,
        media: Sequence[Media],
        *,
        turn_id: str,
        final: bool,
        errors: list[JSON] | None,
        replies: list[Job] | None,
    ) -> TurnPlan | EngineError:
        """One engine turn and its sends; the engine's error if it did not answer (the failure reply is sent)."""
        d = self.deps
        if errors is None:
            errors = await d.store.pop_sms_errors(session.tenant_number, session.user_number)
        state = build_state(session, media, errors)
        texts: list[str] = []
        combined = TurnPlan()
        for _ in range(MAX_ENGINE_SWITCHES + 1):
            reply = await self._ask_engine(tenant, session, text, state)
            if isinstance(reply, EngineError):
                for error in errors:  # the engine never saw them: keep them for the next turn
                    await d.store.push_sms_error(session.tenant_number, session.user_number, error)
                await self._send_failed_reply(tenant, session, turn_id, replies)
                d.metrics.turns.labels("engine_failed").inc()
                return reply
            session.engine_state = reply.engine_state
            for command in reply.commands:
                d.metrics.commands.labels(command.name).inc()
            plan = interpret(reply, session)
            session.pending_options = plan.options or None
            texts.append(plan.text)
            _merge(combined, plan)
            if plan.conversation_config is None or final or not self._switch_engine(tenant, session, plan):
                break
        combined.text = "\n".join(t for t in texts if t)
        if combined.session_timeout is not None and not final:
            session.timeout_seconds = combined.session_timeout
        await self._send_plan(session, combined, turn_id, replies)
        d.metrics.turns.labels("ok").inc()
        return combined

    async def _ask_engine(
        self, tenant: TenantConfig, session: Session, text: str, state: JSON
    ) -> EngineReply | EngineError:
        d = self.deps
        engine_config = self.engine_config(tenant, session)
        engine = d.engines.get(engine_config)
        request = TurnRequest(text=text, state=state, engine_state=session.engine_state, user_id=session.user_number)
        started = time.perf_counter()
        try:
            reply = await engine.turn(request)
        except EngineError as exc:
            d.metrics.errors.labels("engine").inc()
            log.error(
                "engine_failed",
                session_id=session.session_id,
                engine=engine_config.kind,
                error=str(exc),
                status=exc.status,
            )
            return exc
        finally:
            elapsed = time.perf_counter() - started
            d.metrics.engine_latency.labels(engine_config.kind).observe(elapsed)
            warn_if_slow("engine", elapsed, d.config.latency_reporting_threshold_ms, session.session_id)
        return reply

    def engine_config(self, tenant: TenantConfig, session: Session) -> EngineConfig:
        if not session.conversation_override:
            return tenant.engine
        try:
            return apply_override(tenant.engine, session.conversation_override)
        except InvalidOverride:
            return tenant.engine

    def _switch_engine(self, tenant: TenantConfig, session: Session, plan: TurnPlan) -> bool:
        """Apply smsActSetConversationConfig; True when the turn must be re-run on the new engine."""
        assert plan.conversation_config is not None
        merged = {**(session.conversation_override or {}), **plan.conversation_config}
        try:
            apply_override(tenant.engine, merged)
        except InvalidOverride as exc:
            log.warning(
                "command_ignored", command="smsActSetConversationConfig", reason=str(exc), session_id=session.session_id
            )
            return False
        session.conversation_override = merged
        session.engine_state = {}  # a new workspace starts its own context
        log.info("conversation_config_changed", session_id=session.session_id)
        return True

    # Sending -----------------------------------------------------------------------------------
    async def _send_plan(self, session: Session, plan: TurnPlan, turn_id: str, replies: list[Job] | None) -> None:
        pair = (session.tenant_number, session.user_number)
        if plan.text or plan.media_urls:
            self._transcript("out", plan.text, session)
            await self.deliver(
                session.tenant_number,
                session.user_number,
                plan.text,
                plan.media_urls,
                session.session_id,
                id_prefix=turn_id,
                error_to=pair,
                into=replies,
            )
        for n, extra in enumerate(plan.extra_sends):
            await self.deliver(
                extra.tenant_number,
                extra.user_number,
                extra.text,
                list(extra.media_urls),
                session.session_id,
                id_prefix=f"{turn_id}/vgw{n}",
                error_to=pair,
                into=replies,
            )

    async def _send_failed_reply(
        self, tenant: TenantConfig, session: Session, turn_id: str, replies: list[Job] | None
    ) -> None:
        override = session.conversation_override or {}
        message = override.get("conversationFailedReplyMessage", tenant.conversation_failed_reply_message)
        if isinstance(message, str) and message:
            await self.deliver(
                session.tenant_number,
                session.user_number,
                message,
                [],
                session.session_id,
                id_prefix=f"{turn_id}/failed",
                error_to=(session.tenant_number, session.user_number),
                into=replies,
            )

    async def deliver(
        self,
        tenant_number: str,
        user_number: str,
        text: str,
        media_urls: Sequence[str],
        session_id: str | None,
        *,
        id_prefix: str | None = None,
        error_to: tuple[str, str] | None = None,
        job_extra: JSON | None = None,
        into: list[Job] | None = None,
    ) -> tuple[list[str], list[JSON]]:
        """Queue text and media for sending, within the provider's limits (or, with `into`, add their send jobs
        to it for the caller to queue: a turn queues its replies with its session's save).

        Returns the ids of the queued messages and the errors found before sending (refused media, unknown
        tenant); those errors are also kept as smsError for `error_to`'s next turn. Failures of the send
        itself reach `error_to` when the outbox gives up on the message.
        """
        d = self.deps
        prefix = id_prefix or new_id("send")
        errors: list[JSON] = []
        queued: list[str] = []
        tenant = d.config.tenant_for(tenant_number)
        if tenant is None:
            errors.append({"code": "unknownTenant", "message": f"no tenant is configured for {tenant_number}"})
        else:
            counter = itertools.count()
            host_refusal, size_of = self._media_lookups()
            media_plan = await plan_outbound(
                text,
                media_urls,
                tenant_number=tenant_number,
                user_number=user_number,
                session_id=session_id,
                limits=d.limits(tenant),
                allow_private_hosts=d.config.media.allow_private_hosts,
                host_refusal=host_refusal,
                size_of=size_of,
                new_id=lambda: message_id_for(prefix, next(counter)),
            )
            for url, code, reason in media_plan.rejected:
                d.metrics.sends.labels("rejected", "media").inc()
                log.warning("media_rejected", code=code, reason=reason, session_id=session_id)
                errors.append({"code": code, "message": reason, "mediaURL": url})
            if media_plan.links_as_text and media_plan.messages:
                d.metrics.mms_fallbacks.labels(tenant.provider.kind).inc()
                log.info("media_sent_as_links", session_id=session_id, reason="no MMS to this user from this sender")
                if error_to is not None:
                    await d.store.push_sms_error(
                        error_to[0],
                        error_to[1],
                        media_fallback_notice(
                            MMS_UNAVAILABLE,
                            "MMS is not available to this user from this number: the media were sent as links",
                            media_plan.messages[0].message_id,
                        ),
                    )
            for message in media_plan.messages:
                if into is not None:
                    into.append(send_job(message, error_to, job_extra))
                    queued.append(message.message_id)
                elif await d.store.enqueue_job(send_job(message, error_to, job_extra)):
                    queued.append(message.message_id)
                else:
                    log.info("send_already_queued", message_id=message.message_id, session_id=session_id)
            if queued and into is None:
                d.notify_outbox()
        if error_to is not None:
            for error in errors:
                await d.store.push_sms_error(error_to[0], error_to[1], error)
        return queued, errors

    def _media_lookups(self) -> tuple[HostRefusal | None, SizeOf | None]:
        """How planning learns about media: their hosts' addresses (unless private hosts are allowed, for local
        testing) and their sizes (unless the size check is off)."""
        http, policy = self.deps.media_http, self.deps.config.media

        def host_refusal(host: str) -> Awaitable[str | None]:
            # The provider resolves the name itself and may pick any address: every one must be public.
            return http.refusal(host, every_address=True)

        def size_of(url: str) -> Awaitable[int | None]:
            return head_content_length(
                http.session, url, policy.size_check_timeout_ms, allow_private=policy.allow_private_hosts
            )

        return (None if policy.allow_private_hosts else host_refusal), (size_of if policy.check_size else None)

    # Session end -------------------------------------------------------------------------------
    async def _end_expired(self, tenant: TenantConfig, session: Session, errors: list[JSON] | None = None) -> bool:
        """End the timed-out session, with its timeout turn if the tenant asks for one (given `errors`, the
        smsErrors already taken from the store, else taking them itself). True if that turn ran."""
        self.deps.metrics.sessions_expired.inc()
        log.info("session_ended", session_id=session.session_id, reason="timeout")
        if tenant.notify_on_session_timeout:
            await self.run_turn(
                tenant,
                session,
                RESPONSE_TIMEOUT_TEXT,
                (),
                turn_id=f"timeout:{session.session_id}",
                final=True,
                errors=errors,
            )
        await self.deps.store.delete_session(session.tenant_number, session.user_number, session.session_id)
        return tenant.notify_on_session_timeout

    # Logging helpers ---------------------------------------------------------------------------
    def _transcript(self, direction: str, text: str, session: Session) -> None:
        if self.deps.config.enable_transcription_messages:
            log.info("transcript", direction=direction, text=text, session_id=session.session_id)


def _merge(into: TurnPlan, plan: TurnPlan) -> None:
    into.media_urls.extend(url for url in plan.media_urls if url not in into.media_urls)
    into.extra_sends.extend(plan.extra_sends)
    into.terminate = into.terminate or plan.terminate
    into.force_no_input = into.force_no_input or plan.force_no_input
    if plan.session_timeout is not None:
        into.session_timeout = plan.session_timeout
    into.ignored.extend(plan.ignored)
