"""Parse a Watson Assistant (v1 / SOE, or v2) answer into an `EngineReply`.

Engines answer with arbitrary JSON, so every accessor here checks types and nothing may raise: a malformed
answer yields a (possibly empty) reply, never an exception.

Commands are collected from every place IBM's products put them, in this order:
`output.smsAction`, `context.smsAction` (v2: main skill user_defined), `output.user_defined.smsAction`, the
`output.generic[]` items in order (`user_defined` items' smsAction/vgwAction/vgwActionSequence, `image` items
as `smsActSendMedia`), then the Voice Gateway forms on `output`, `context` and `output.user_defined`.
"""

from __future__ import annotations

from typing import Any

import structlog

from sms_gateway.model import JSON, Choice, Command, EngineReply

log = structlog.get_logger("sms_gateway.replies")

SMS_CHANNELS = frozenset({"text_messaging", "sms"})
# Context keys that carry commands; they are dropped from the stored v1 context so they fire only once.
ACTION_KEYS = ("smsAction", "vgwAction", "vgwActionSequence")
VGW_KEYS = ("vgwAction", "vgwActionSequence")
MAIN_SKILL = "main skill"
COMMAND_SHAPE = '{"command": "<command name>", "parameters": {...}}'
V1_CONTEXT = "context"
V2_CONTEXT = f"context.skills['{MAIN_SKILL}'].user_defined"
# Where each command key may be, as named in a warning (made once: the parse runs every turn).
_WHERE = {
    (source, key): f"{source}.{key}"
    for source in ("output", V1_CONTEXT, V2_CONTEXT, "output.user_defined", "output.generic[].user_defined")
    for key in ACTION_KEYS
}


def parse_v1_answer(body: object) -> EngineReply:
    """Parse a v1 `/message` answer (also an SOE's).

    `engine_state` is `{"context": <returned context without action keys>}`, or `{}` when the answer has no
    context object (the engine then keeps the context it sent).
    """
    answer = _obj(body)
    output = _obj(answer.get("output"))
    context = answer.get("context")
    context_obj = _obj(context)
    generic = _generic(output)

    texts = _v1_reply_texts(output, generic)
    reply = _build(answer, output, context_obj, generic, texts, V1_CONTEXT)
    if isinstance(context, dict):
        reply.engine_state = {"context": without_actions(context)}
    return reply


def parse_v2_answer(body: object) -> EngineReply:
    """Parse a v2 stateful `/message` answer; `engine_state` is left to the engine (the session id)."""
    answer = _obj(body)
    output = _obj(answer.get("output"))
    generic = _generic(output)
    return _build(answer, output, _v2_skill_vars(answer), generic, _generic_texts(generic), V2_CONTEXT)


def action_keys_in_v2_context(body: object) -> list[str]:
    """The command keys the v2 answer left in main skill user_defined (to be cleared on the next turn)."""
    skill_vars = _v2_skill_vars(_obj(body))
    return [key for key in ACTION_KEYS if skill_vars.get(key) is not None]


def without_actions(context: JSON) -> JSON:
    return {key: value for key, value in context.items() if key not in ACTION_KEYS}


def commands_from(value: object, where: str = "smsAction") -> list[Command]:
    """Commands from one `smsAction`/`vgwAction`/`vgwActionSequence` value: an object or a list of objects.

    An entry in another shape is skipped with a warning naming the shape the gateway reads (`where` says where
    the engine put it)."""
    entries = value if isinstance(value, list) else [value]
    commands = []
    for entry in entries:
        if isinstance(entry, dict):
            name = entry.get("command")
            if isinstance(name, str) and name:
                params = entry.get("parameters")
                if len(entry) > 1 + ("parameters" in entry) or not isinstance(params, dict | None):
                    _warn_shape(where, entry, name)
                commands.append(Command(name, dict(params) if isinstance(params, dict) else {}))
                continue
        if entry is not None:
            _warn_shape(where, entry, None)
    return commands


def _warn_shape(where: str, entry: object, name: str | None) -> None:
    """Log what is wrong with a command entry, by its keys only (values may hold phone numbers)."""
    if not isinstance(entry, dict):
        found = f"a {type(entry).__name__}"
        expected = COMMAND_SHAPE
    elif name is None:
        keys = [str(key)[:40] for key in list(entry)[:5]]
        found = "{" + ", ".join(f'"{key}": ...' for key in keys) + "}" if keys else "{}"
        named = next((key for key in keys if key.startswith(("sms", "vgw", "terminate", "set"))), None)
        expected = COMMAND_SHAPE.replace("<command name>", named) if named else COMMAND_SHAPE
    else:
        extra = [str(key)[:40] for key in list(entry) if key not in ("command", "parameters")][:5]
        found = f"{name} with " + (
            f'{", ".join(extra)} beside "parameters"' if extra else '"parameters" that is not an object'
        )
        expected = COMMAND_SHAPE.replace("<command name>", name)
    log.warning("command_unreadable", where=where, found=found, expected=expected)


def _build(
    answer: JSON, output: JSON, ctx_vars: JSON, generic: list[JSON], texts: list[str], ctx_name: str
) -> EngineReply:
    user_defined = _obj(output.get("user_defined"))
    commands = [
        *commands_from(output.get("smsAction"), _WHERE["output", "smsAction"]),
        *commands_from(ctx_vars.get("smsAction"), _WHERE[ctx_name, "smsAction"]),
        *commands_from(user_defined.get("smsAction"), _WHERE["output.user_defined", "smsAction"]),
    ]
    choices: list[Choice] = []
    for item in generic:
        kind = item.get("response_type")
        if kind == "user_defined":
            item_defined = _obj(item.get("user_defined"))
            for key in ACTION_KEYS:
                commands += commands_from(item_defined.get(key), _WHERE["output.generic[].user_defined", key])
        elif kind == "image":
            source = item.get("source")
            if isinstance(source, str) and source:
                commands.append(Command("smsActSendMedia", {"mediaURL": [source]}))
        elif kind == "option":
            choice = _choice(item, "options", "option")
            if choice:
                choices.append(choice)
        elif kind == "suggestion":
            choice = _choice(item, "suggestions", "suggestion")
            if choice:
                choices.append(choice)
    for source, name in ((output, "output"), (ctx_vars, ctx_name), (user_defined, "output.user_defined")):
        for key in VGW_KEYS:
            commands += commands_from(source.get(key), _WHERE[name, key])
    return EngineReply(texts=texts, commands=commands, choices=choices, raw=answer)


def _v1_reply_texts(output: JSON, generic: list[JSON]) -> list[str]:
    """`output.generic`'s texts, unless an SOE edited `output.text` after Watson answered.

    Watson (API 2018-07-10 on) sends both forms; IBM's SOE samples edit only `output.text`. So when that has
    texts that match neither the generic texts for SMS nor all of them, the SOE's texts are the reply.
    """
    generic_texts = _generic_texts(generic)
    text = _v1_texts(output.get("text"))
    if not generic_texts:
        return text
    if not text or text == generic_texts or text == _generic_texts(_dicts(output.get("generic"))):
        return generic_texts
    return text


def _generic_texts(generic: list[JSON]) -> list[str]:
    return [
        item["text"]
        for item in generic
        if item.get("response_type") == "text" and isinstance(item.get("text"), str) and item["text"]
    ]


def _v1_texts(text: object) -> list[str]:
    if isinstance(text, str):
        return [text] if text else []
    if isinstance(text, dict):  # the dialog-editor form {"values": [...]} that some SOEs pass through
        text = text.get("values")
    if isinstance(text, list):
        return [t for t in text if isinstance(t, str) and t]
    return []


def _choice(item: JSON, list_key: str, kind: str) -> Choice | None:
    entries = [entry for entry in _dicts(item.get(list_key)) if isinstance(entry.get("label"), str)]
    if not entries:
        return None
    title = item.get("title")
    if not isinstance(title, str) or not title:
        title = item.get("description")
    labels = tuple(entry["label"] for entry in entries)
    values = tuple(_option_text(entry) for entry in entries)
    return Choice(title if isinstance(title, str) else "", kind, labels, values)


def _option_text(entry: JSON) -> str:
    """What choosing the option sends as input: `value.input.text`, else its label."""
    text = _obj(_obj(entry.get("value")).get("input")).get("text")
    return text if isinstance(text, str) and text else str(entry["label"])


def _v2_skill_vars(answer: JSON) -> JSON:
    skills = _obj(_obj(answer.get("context")).get("skills"))
    return _obj(_obj(skills.get(MAIN_SKILL)).get("user_defined"))


def _generic(output: JSON) -> list[JSON]:
    """`output.generic` items, minus those addressed only to other channels than SMS."""
    return [item for item in _dicts(output.get("generic")) if _for_sms(item.get("channels"))]


def _dicts(value: object) -> list[JSON]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _for_sms(channels: object) -> bool:
    if not isinstance(channels, list) or not channels:
        return True
    for entry in channels:
        name = entry.get("channel") if isinstance(entry, dict) else entry
        if isinstance(name, str) and name in SMS_CHANNELS:
            return True
    return False


def _obj(value: Any) -> JSON:
    return value if isinstance(value, dict) else {}
