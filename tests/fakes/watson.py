"""A fake Watson Assistant (v1, v2 both path styles, an SOE path) and IBM Cloud IAM token endpoint.

Payload shapes follow Watson Assistant's published v1/v2 API reference and parse with ibm-watson's models
(tests/test_watson_wire.py). Every request is recorded; answers come from a
per-test `dialog` callable, and failures can be scripted.

    fake = FakeWatson(workspaces={"WS1"}, assistants={"A1": {"E1"}})
    server = await aiohttp_server(fake.app())
    base_url = str(server.make_url(""))

v1 dialog: `(text, context) -> partial answer`; v2: `(text, main skill user_defined) -> partial answer`.
In a partial answer `output` replaces the default output, `context` (v1) updates the returned context and
`user_defined` (v2) updates the session's main-skill variables; any other key is copied to the answer.

Standalone: `python -m tests.fakes.watson --port 9999`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web

JSON = dict[str, Any]
Dialog = Callable[[str, JSON], JSON]

IAM_GRANT_TYPE = "urn:ibm:params:oauth:grant-type:apikey"
_JWT_KEY = "fake-iam-signing-key-of-at-least-32-bytes"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    text: str
    kind: str  # "v1", "soe", "v2_session", "v2_message", "v2_delete", "iam"


@dataclass
class Failure:
    """One scripted failure: sleep `delay` seconds, then answer `status` with `body` (str, bytes or JSON)."""

    status: int = 500
    body: Any = None
    delay: float = 0.0
    kinds: tuple[str, ...] = ("v1", "soe", "v2_message")
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class FakeSession:
    assistant_id: str
    user_defined: JSON = field(default_factory=dict)
    turns: int = 0


def text_output(*texts: str, **extra: Any) -> JSON:
    """A v1 `output` as WA answers since 2018: `text` and the same texts as `generic` text items."""
    return {
        "text": list(texts),
        "generic": [{"response_type": "text", "text": t} for t in texts],
        "nodes_visited": ["node_1"],
        "log_messages": [],
        **extra,
    }


def echo_dialog(text: str, variables: JSON) -> JSON:
    return {"output": text_output(f"You said: {text}" if text else "Welcome")}


class FakeWatson:
    def __init__(
        self,
        *,
        workspaces: set[str] | None = None,
        assistants: dict[str, set[str]] | None = None,
        soe_path: str = "/soe/orchestrate",
        apikeys: set[str] | None = None,
        expected_authorization: str | None = None,
        token_lifetime: int = 3600,
    ) -> None:
        self.workspaces = workspaces  # None: any workspace id exists
        self.assistants = assistants if assistants is not None else {"A1": {"E1"}}
        self.soe_path = soe_path
        self.apikeys = apikeys if apikeys is not None else {"good-key"}
        # "iam" accepts any token this fake issued; a string must match exactly; None checks nothing.
        self.expected_authorization = expected_authorization
        self.token_lifetime = token_lifetime
        self.v1_dialog: Dialog = echo_dialog
        self.v2_dialog: Dialog = echo_dialog
        self.requests: list[Recorded] = []
        self.failures: list[Failure] = []
        self.sessions: dict[str, FakeSession] = {}
        self.issued_tokens: list[str] = []

    # -- scripting ------------------------------------------------------------------------------------

    def fail(self, times: int = 1, **failure: Any) -> None:
        self.failures.extend(Failure(**failure) for _ in range(times))

    def expire_sessions(self) -> None:
        self.sessions.clear()

    def of_kind(self, *kinds: str) -> list[Recorded]:
        return [r for r in self.requests if r.kind in kinds]

    @property
    def token_fetches(self) -> int:
        return len(self.issued_tokens)

    # -- the app --------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        v2 = "/v2/assistants/{assistant_id}"
        env = v2 + "/environments/{environment_id}"
        app.router.add_post("/identity/token", self._iam)
        app.router.add_post("/v1/workspaces/{workspace_id}/message", self._v1)
        app.router.add_post(self.soe_path, self._soe)
        for prefix in (v2, env):
            app.router.add_post(prefix + "/sessions", self._v2_session)
            app.router.add_delete(prefix + "/sessions/{session_id}", self._v2_delete)
            app.router.add_post(prefix + "/sessions/{session_id}/message", self._v2_message)
        return app

    async def _record(self, request: web.Request, kind: str) -> Recorded:
        text = await request.text()
        try:
            body = json.loads(text) if text and request.content_type == "application/json" else None
        except ValueError:
            body = None
        query, headers = dict(request.query), dict(request.headers)
        rec = Recorded(request.method, request.path, query, headers, body, text, kind)
        self.requests.append(rec)
        return rec

    async def _scripted(self, kind: str) -> web.Response | None:
        for i, failure in enumerate(self.failures):
            if kind in failure.kinds:
                del self.failures[i]
                if failure.delay:
                    await asyncio.sleep(failure.delay)
                return _respond(failure)
        return None

    def _unauthorized(self, rec: Recorded) -> web.Response | None:
        expected = self.expected_authorization
        got = rec.headers.get("Authorization")
        if expected is None or got == expected:
            return None
        if expected == "iam" and got is not None and got.removeprefix("Bearer ") in self.issued_tokens:
            return None
        return _error(401, "Unauthorized")

    async def _iam(self, request: web.Request) -> web.Response:
        rec = await self._record(request, "iam")
        form = await request.post()
        rec.json = dict(form)
        if form.get("grant_type") != IAM_GRANT_TYPE or form.get("apikey") not in self.apikeys:
            return web.json_response(
                {"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found"}, status=400
            )
        now = int(time.time())
        exp = now + self.token_lifetime
        claims = {"iat": now, "exp": exp, "sub": "iam-ServiceId-fake", "jti": uuid.uuid4().hex}
        token = jwt.encode(claims, _JWT_KEY, algorithm="HS256")
        self.issued_tokens.append(token)
        return web.json_response(
            {
                "access_token": token,
                "refresh_token": "not_supported",
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "expiration": exp,
                "scope": "ibm openid",
            }
        )

    async def _v1(self, request: web.Request) -> web.Response:
        rec = await self._record(request, "v1")
        if not rec.query.get("version"):
            return _error(400, "Missing required query parameter 'version'")
        workspace = request.match_info["workspace_id"]
        if self.workspaces is not None and workspace not in self.workspaces:
            return _error(404, "Resource not found")
        return await self._v1_answer(rec)

    async def _soe(self, request: web.Request) -> web.Response:
        return await self._v1_answer(await self._record(request, "soe"))

    async def _v1_answer(self, rec: Recorded) -> web.Response:
        if denied := self._unauthorized(rec):
            return denied
        if scripted := await self._scripted(rec.kind):
            return scripted
        body = rec.json if isinstance(rec.json, dict) else None
        if body is None:
            return _error(400, "Invalid JSON input")
        text = (body.get("input") or {}).get("text", "")
        if not isinstance(text, str) or len(text) > 2048 or any(c in text for c in "\r\n\t"):
            return _error(400, "Invalid input text")
        context = dict(body.get("context") or {})
        system = dict(context.get("system") or {"dialog_stack": [{"dialog_node": "root"}]})
        system["dialog_turn_counter"] = int(system.get("dialog_turn_counter", 0)) + 1
        system["dialog_request_counter"] = system["dialog_turn_counter"]
        context.setdefault("conversation_id", str(uuid.uuid4()))
        context["system"] = system
        partial = dict(self.v1_dialog(text, context))
        output = partial.pop("output", None) or text_output()
        context.update(partial.pop("context", None) or {})
        answer: JSON = {"intents": [], "entities": [], "input": {"text": text}}
        # user_id: as sent, else the conversation id (WA's rule); the SDK's MessageResponse requires it.
        user_id = body.get("user_id") if isinstance(body.get("user_id"), str) else context["conversation_id"]
        answer |= {"output": output, "context": context, "user_id": user_id}
        answer.update(partial)
        return web.json_response(answer)

    def _assistant_known(self, request: web.Request) -> bool:
        environments = self.assistants.get(request.match_info["assistant_id"])
        env = request.match_info.get("environment_id")
        return environments is not None and (env is None or env in environments)

    async def _v2_session(self, request: web.Request) -> web.Response:
        rec = await self._record(request, "v2_session")
        if denied := self._unauthorized(rec):
            return denied
        if not self._assistant_known(request):
            return _error(404, "Resource not found")
        if scripted := await self._scripted("v2_session"):
            return scripted
        session_id = str(uuid.uuid4())
        self.sessions[session_id] = FakeSession(request.match_info["assistant_id"])
        return web.json_response({"session_id": session_id}, status=201)

    async def _v2_delete(self, request: web.Request) -> web.Response:
        await self._record(request, "v2_delete")
        self.sessions.pop(request.match_info["session_id"], None)
        return web.json_response({})

    async def _v2_message(self, request: web.Request) -> web.Response:
        rec = await self._record(request, "v2_message")
        if denied := self._unauthorized(rec):
            return denied
        if not rec.query.get("version"):
            return _error(400, "Missing required query parameter 'version'")
        if not self._assistant_known(request):
            return _error(404, "Resource not found")
        session = self.sessions.get(request.match_info["session_id"])
        if session is None:
            return _error(404, "Invalid Session")
        if scripted := await self._scripted("v2_message"):
            return scripted
        body = rec.json if isinstance(rec.json, dict) else {}
        message_input = body.get("input") or {}
        text = message_input.get("text", "")
        skills = (body.get("context") or {}).get("skills") or {}
        session.user_defined.update((skills.get("main skill") or {}).get("user_defined") or {})
        session.turns += 1
        partial = dict(self.v2_dialog(text, dict(session.user_defined)))
        output = partial.pop("output", None) or {"generic": []}
        session.user_defined.update(partial.pop("user_defined", None) or {})
        answer: JSON = {"output": output, "user_id": body.get("user_id", "anonymous")}
        if (message_input.get("options") or {}).get("return_context"):
            answer["context"] = {
                "global": {
                    "system": {"turn_count": session.turns, "user_id": answer["user_id"]},
                    "session_id": request.match_info["session_id"],
                },
                "skills": {"main skill": {"user_defined": dict(session.user_defined), "system": {"state": "x"}}},
                "integrations": (body.get("context") or {}).get("integrations", {}),
            }
        answer.update(partial)
        return web.json_response(answer)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "code": status}, status=status)


def _respond(failure: Failure) -> web.Response:
    status, body = failure.status, failure.body
    if body is None:
        body = {"error": "Internal Server Error" if status >= 500 else "Too Many Requests", "code": status}
    if not isinstance(body, bytes | str):
        body = json.dumps(body)
    return web.Response(status=status, body=body, headers=failure.headers, content_type=failure.content_type)


async def serve(fake: FakeWatson, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Start the fake outside pytest; returns the runner (to `cleanup()`) and its base URL."""
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, f"http://{host}:{bound}"


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake Watson Assistant v1/v2 + IAM token endpoint")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    args = parser.parse_args()

    async def run() -> None:
        runner, url = await serve(FakeWatson(), args.host, args.port)
        print(f"fake Watson at {url} (v1 workspaces: any; v2 assistant A1 env E1; IAM apikey good-key)")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    asyncio.run(run())


if __name__ == "__main__":
    main()
