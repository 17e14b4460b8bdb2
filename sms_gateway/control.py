"""What the session-control REST API does, without HTTP: start and end sessions, test a tenant's provider and
engine. Session changes run in the session's queue (the inbound worker's KeyedRunner), so they never overlap
a turn of the same (tenant, user) in this process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from sms_gateway.config.model import TenantConfig
from sms_gateway.context import build_state
from sms_gateway.conversation import Conversations
from sms_gateway.engines.base import TurnRequest
from sms_gateway.engines.registry import EngineRegistry
from sms_gateway.model import JSON, EngineReply, OutboundMessage, SendResult, Session, new_id
from sms_gateway.providers.base import Sender
from sms_gateway.worker import KeyedRunner, session_key

log = structlog.get_logger("sms_gateway.control")

T = TypeVar("T")

TEST_MESSAGE = "Test Connection message from SMS Gateway"


async def in_session_queue(
    runner: KeyedRunner, tenant_number: str, user_number: str, work: Callable[[], Awaitable[T]]
) -> T:
    """Run `work` in the pair's queue and wait for it. A caller that goes away does not cancel it."""
    result: asyncio.Future[T] = asyncio.get_running_loop().create_future()

    async def task() -> None:
        try:
            value = await work()
        except asyncio.CancelledError:
            if not result.done():
                result.cancel()
            raise
        except Exception as exc:  # handed to the caller, who answers for it
            if not result.done():
                result.set_exception(exc)
            return
        if not result.done():
            result.set_result(value)

    runner.submit(session_key(tenant_number, user_number), task)
    return await asyncio.shield(result)


async def start_session(
    conversations: Conversations,
    runner: KeyedRunner,
    tenant: TenantConfig,
    user_number: str,
    user_data: JSON | None,
    session_timeout: int | None,
    clock: Callable[[], float] = time.time,
) -> tuple[Session, bool]:
    """(the session, True) after its first turn ran; (the pair's existing session, False) if it had one."""

    async def start() -> tuple[Session, bool]:
        store = conversations.deps.store
        now = clock()
        session = Session.new(tenant.phone_number, user_number, session_timeout or tenant.timeout_for_session, now)
        session.user_data = user_data
        session.rest_timeout = session_timeout
        existing = await store.insert_session(session)
        if existing is not None and existing.is_expired(now):
            # An expired session the sweeper has not ended yet: end it (with its timeout turn) and start anew.
            await conversations.expire_session(existing.tenant_number, existing.user_number, existing.session_id)
            existing = await store.insert_session(session)
        if existing is not None:
            return existing, False
        log.info("session_created", session_id=session.session_id, via="rest", user=user_number)
        await conversations.run_turn(tenant, session, "", (), turn_id=f"rest:{session.session_id}")
        return session, True

    return await in_session_queue(runner, tenant.phone_number, user_number, start)


async def end_session(conversations: Conversations, runner: KeyedRunner, session: Session) -> bool:
    """Delete the session (after any turn of it in flight, which would otherwise save it again)."""

    async def end() -> bool:
        deleted = await conversations.deps.store.delete_session(
            session.tenant_number, session.user_number, session.session_id
        )
        if deleted:
            log.info("session_ended", session_id=session.session_id, reason="rest")
        return deleted

    return await in_session_queue(runner, session.tenant_number, session.user_number, end)


async def check_provider(sender: Sender, tenant: TenantConfig, to_number: str) -> SendResult:
    """Send IBM's test SMS straight through the tenant's sender (not the outbox), so the result is known now."""
    message = OutboundMessage(
        message_id=new_id("test"), tenant_number=tenant.phone_number, user_number=to_number, text=TEST_MESSAGE
    )
    return await sender.send(message, None)


async def check_conversation(engines: EngineRegistry, tenant: TenantConfig, user_number: str) -> EngineReply:
    """One turn with empty text on a throwaway session that is never stored. Raises EngineError."""
    session = Session.new(tenant.phone_number, user_number, tenant.timeout_for_session)
    request = TurnRequest(text="", state=build_state(session, ()), user_id=user_number)
    return await engines.get(tenant.engine).turn(request)
