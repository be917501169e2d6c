"""Translation across vendors, one behaviour each: what Claude Code and Codex send is parsed at the
edge, each provider builds its upstream body from it, and calls come back under the client's names.
The requests are shaped after what Claude Code 2.1.332 and Codex 0.171.0 really send."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cb.llm import messages_api, responses_api, wire
from cb.llm.errors import InvalidRequest
from cb.llm.providers.anthropic import AnthropicProvider
from cb.llm.providers.base import Deployment
from cb.llm.providers.google import GoogleProvider
from cb.llm.providers.openai import OpenAIProvider
from cb.llm.tools import NAME_LIMIT, canonical_name
from cb.llm.types import ChatResponse, Choice, Message, StreamChunk, ToolCall, ToolCallDelta, Usage

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"file_path": {"type": "string", "format": "uri"}, "options": {"type": "object", "properties": {}}},
    "required": ["file_path"],
}
CLAUDE_CODE = {
    "model": "gpt-5",
    "max_tokens": 32000,
    "stream": True,
    "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332;"},
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Read a.txt"}]},
        {"role": "system", "content": [{"type": "text", "text": "Today is Sunday."}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hm", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/a.txt"}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "hello"}]},
    ],
    "tools": [
        {"name": "Read", "description": "Reads a file", "input_schema": SCHEMA},
        {
            "name": "DeferredToolPlaceholder",
            "input_schema": {"type": "object", "properties": {}},
            "defer_loading": True,
        },
    ],
    "thinking": {"type": "adaptive", "display": "omitted"},
    "output_config": {"effort": "high"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "metadata": {"user_id": json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": "s" * 36})},
}
NAMESPACE = {
    "type": "namespace",
    "name": "multi_agent_v1",
    "description": "Sub-agents",
    "tools": [{"type": "function", "name": "spawn_agent", "parameters": {"type": "object", "properties": {}}}],
}
APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files. This is a FREEFORM tool.",
    "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch"'},
}
CODEX = {
    "model": "claude-sonnet-4-5",
    "stream": True,
    "store": False,
    "include": ["reasoning.encrypted_content"],
    "reasoning": {"effort": "high", "summary": "auto"},
    "prompt_cache_key": "0190-session",
    "client_metadata": {"session_id": "0190-session"},
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "text": {"verbosity": "low"},
    "tools": [
        {"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {}}},
        NAMESPACE,
        APPLY_PATCH,
        {"type": "tool_search", "execution": "client", "parameters": {"type": "object", "properties": {}}},
        {"type": "web_search", "external_web_access": False},
    ],
    "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Patch it"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"},
        {"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Done"},
        {
            "type": "function_call",
            "call_id": "call_s",
            "namespace": "multi_agent_v1",
            "name": "spawn_agent",
            "arguments": "{}",
        },  # fmt: skip
        {"type": "function_call_output", "call_id": "call_s", "output": "spawned"},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Approval: never."}]},
    ],
}


def body_for(provider, chat, model: str) -> dict:
    return provider.chat_call(Deployment("d", provider.type, "http://upstream", "key"), chat, model).json


# -- Claude Code's Messages request ------------------------------------------------------------


def test_claude_code_request_parses_without_a_400():
    chat = messages_api.parse_request(CLAUDE_CODE)
    assert [m.role for m in chat.messages] == ["system", "user", "system", "assistant", "tool"]
    assert chat.messages[0].content == "You are Claude Code."  # the billing header is Anthropic's own
    assert chat.reasoning_effort == "high" and chat.max_tokens == 32000
    assert set(chat.dropped) >= {"cache_control", "thinking", "context_management"}


def test_tool_schemas_lose_schema_keywords_and_keep_the_rest():
    chat = messages_api.parse_request(CLAUDE_CODE)
    read = chat.tools[0]
    assert "$schema" not in read.parameters and read.parameters["required"] == ["file_path"]
    assert [t.name for t in chat.tools] == ["Read", "DeferredToolPlaceholder"]


def test_metadata_user_id_is_hashed_to_fit_user_and_short_ones_are_kept():
    chat = messages_api.parse_request(CLAUDE_CODE)
    assert chat.user.startswith("user-") and len(chat.user) <= 64
    assert chat.user == messages_api.parse_request(CLAUDE_CODE).user  # the same id, the same user
    later = json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": "t" * 36})
    assert messages_api.parse_request(dict(CLAUDE_CODE, metadata={"user_id": later})).user == chat.user
    short = messages_api.parse_request(dict(CLAUDE_CODE, metadata={"user_id": "ada"}))
    assert short.user == "ada"


def test_openai_keeps_a_system_turn_in_place_and_gets_reasoning_effort():
    chat = messages_api.parse_request(CLAUDE_CODE)
    body = body_for(OpenAIProvider(), chat, "gpt-5")
    assert [m["role"] for m in body["messages"]] == ["system", "user", "system", "assistant", "tool"]
    assert body["reasoning_effort"] == "high" and body["max_completion_tokens"] == 32000
    assert "thinking" not in json.dumps(body["messages"])


def test_gemini_gets_a_system_turn_as_an_operator_note_and_a_thinking_budget():
    chat = messages_api.parse_request(CLAUDE_CODE)
    body = body_for(GoogleProvider(), chat, "gemini-2.5-pro")
    assert body["systemInstruction"] == {"parts": [{"text": "You are Claude Code."}]}
    first = body["contents"][0]
    assert first["role"] == "user" and first["parts"][-1] == {"text": "<system-note>\nToday is Sunday.\n</system-note>"}
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 24576}
    declaration = body["tools"][0]["functionDeclarations"][0]["parameters"]
    assert (
        "format" not in declaration["properties"]["file_path"]
        and "properties" not in declaration["properties"]["options"]
    )


def test_gemini_3_gets_a_thinking_level():
    chat = messages_api.parse_request(CLAUDE_CODE)
    assert body_for(GoogleProvider(), chat, "gemini-3-pro")["generationConfig"]["thinkingConfig"] == {
        "thinkingLevel": "high"
    }


def test_long_tool_names_are_shortened_for_the_target_and_given_back_as_sent():
    name = "mcp__company-knowledge-base__search_internal_documents_by_semantic_similarity"
    body = dict(CLAUDE_CODE, tools=[{"name": name, "input_schema": {"type": "object"}}])
    chat = messages_api.parse_request(body)
    sent = body_for(OpenAIProvider(), chat, "gpt-5")["tools"][0]["function"]["name"]
    assert len(sent) <= NAME_LIMIT and sent == canonical_name(name)
    answer = ChatResponse(
        "x", "gpt-5", [Choice(0, Message("assistant", None, [ToolCall("c1", sent, "{}")]), "tool_calls")], Usage()
    )
    assert messages_api.render_message(answer, "gpt-5", chat.client_tools)["content"][0]["name"] == name
    events = messages_api.MessageEvents("gpt-5", 10, chat.client_tools)
    started = events.chunk(StreamChunk(tool_calls=[ToolCallDelta(0, "c1", sent, "")]))
    assert started[0][1]["content_block"]["name"] == name


def test_a_web_search_request_on_a_target_without_search_is_refused_in_the_clients_envelope():
    body = dict(CLAUDE_CODE, tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 8}])
    chat = messages_api.parse_request(body)
    assert chat.server_tools == ["web_search"] and chat.server_tools_required
    with pytest.raises(InvalidRequest) as caught:
        body_for(OpenAIProvider(), chat, "gpt-5")
    assert "web_search" in caught.value.message
    assert body_for(GoogleProvider(), chat, "gemini-2.5-pro")["tools"] == [{"googleSearch": {}}]


def test_unknown_blocks_and_fields_are_dropped_by_name_not_refused():
    body = dict(CLAUDE_CODE, speed="fast", messages=[
        {"role": "user", "content": [{"type": "document", "source": {"type": "base64", "data": "JVBE"}},
                                     {"type": "text", "text": "Summarise"}]},
    ])  # fmt: skip
    chat = messages_api.parse_request(body)
    assert {"speed", "document blocks"} <= set(chat.dropped)
    assert chat.messages[-1].content == "Summarise"


# -- Codex's Responses request -------------------------------------------------------------------


def test_codex_request_parses_without_a_400():
    req = responses_api.parse_request(CODEX)
    chat = req.chat
    assert [m.role for m in chat.messages] == ["system", "user", "assistant", "tool", "assistant", "tool", "system"]
    assert chat.reasoning_effort == "high" and chat.cache_key == "0190-session"
    assert {"reasoning.encrypted_content", "text.verbosity"} <= set(chat.dropped)
    assert "tool_search" in [t.name for t in chat.tools]
    assert chat.server_tools == [] and "web_search (cached)" in chat.dropped  # no live search asked for
    live = [t if t.get("type") != "web_search" else {"type": "web_search"} for t in CODEX["tools"]]
    chat = responses_api.parse_request(dict(CODEX, tools=live)).chat
    assert chat.server_tools == ["web_search"] and not chat.server_tools_required


def test_namespace_tools_are_flattened_and_their_calls_come_back_with_the_namespace():
    req = responses_api.parse_request(CODEX)
    flat = canonical_name("spawn_agent", "multi_agent_v1")
    assert flat in [t.name for t in req.chat.tools]
    assert req.chat.messages[4].tool_calls[0].name == flat  # the earlier call, under the same flat name
    item = responses_api.output_items(Message("assistant", None, [ToolCall("c9", flat, "{}")]), req.chat.client_tools)
    assert item[0]["type"] == "function_call"
    assert (item[0]["namespace"], item[0]["name"]) == ("multi_agent_v1", "spawn_agent")


def test_custom_tools_become_a_function_of_one_string_and_their_calls_custom_tool_calls():
    req = responses_api.parse_request(CODEX)
    patch = next(t for t in req.chat.tools if t.name == "apply_patch")
    assert patch.parameters["required"] == ["input"] and "lark grammar" in patch.description
    assert json.loads(req.chat.messages[2].tool_calls[0].arguments) == {"input": "*** Begin Patch"}
    call = ToolCall("c7", "apply_patch", json.dumps({"input": "*** Begin Patch\n*** End Patch\n"}))
    item = responses_api.output_items(Message("assistant", None, [call]), req.chat.client_tools)[0]
    assert item["type"] == "custom_tool_call" and item["input"] == "*** Begin Patch\n*** End Patch\n"


def test_a_streamed_custom_call_ends_as_one_custom_tool_call_item():
    req = responses_api.parse_request(CODEX)
    events = responses_api.ResponseEvents(req)
    events.start()
    arguments = json.dumps({"input": "*** Begin Patch"})
    sent = events.chunk(StreamChunk(tool_calls=[ToolCallDelta(0, "c1", "apply_patch", arguments[:9])]))
    sent += events.chunk(
        StreamChunk(tool_calls=[ToolCallDelta(0, arguments=arguments[9:])], finish_reason="tool_calls")
    )
    sent += events.end(Usage(10, 5))
    names = [name for name, _ in sent]
    assert "response.function_call_arguments.delta" not in names
    assert names[-4:] == [
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert sent[-1][1]["response"]["output"][0]["input"] == "*** Begin Patch"


def test_anthropic_gets_thinking_with_room_for_it_and_cache_breakpoints():
    first = dict(CODEX, input=CODEX["input"][:2])
    body = body_for(AnthropicProvider(), responses_api.parse_request(first).chat, "claude-sonnet-4-5")
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 24576}
    assert body["max_tokens"] > 24576
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert not any(tool.get("type") == "web_search_20250305" for tool in body["tools"])  # Codex asked for cached


def test_anthropic_does_not_think_inside_a_translated_tool_loop():
    looping = dict(CODEX, input=CODEX["input"][:5])
    body = body_for(AnthropicProvider(), responses_api.parse_request(looping).chat, "claude-sonnet-4-5")
    assert "thinking" not in body
    assert body["messages"][1]["content"][0]["type"] == "tool_use"


def test_a_later_developer_message_reaches_anthropic_as_an_operator_note():
    body = body_for(AnthropicProvider(), responses_api.parse_request(CODEX).chat, "claude-sonnet-4-5")
    assert body["system"][0]["text"] == "You are Codex."
    assert body["messages"][-1]["content"][-1]["text"] == "<system-note>\nApproval: never.\n</system-note>"


def test_openai_gets_the_prompt_cache_key_and_gemini_drops_it():
    chat = responses_api.parse_request(CODEX).chat
    assert body_for(OpenAIProvider(), chat, "gpt-5")["prompt_cache_key"] == "0190-session"
    body_for(GoogleProvider(), chat, "gemini-2.5-pro")
    assert "prompt_cache_key" in chat.dropped


@pytest.mark.parametrize(
    "status, message, code",
    [
        (400, "prompt is too long: 210000 tokens > 200000 maximum", "context_length_exceeded"),
        (400, "This model's maximum context length is 128000 tokens", "context_length_exceeded"),
        (429, "Rate limit reached", "rate_limit_exceeded"),
        (502, "upstream broke", "server_error"),
    ],
)
def test_a_failed_stream_ends_with_a_code_codex_knows(status, message, code):
    failed = responses_api.ResponseEvents(responses_api.parse_request(CODEX)).fail(status, message)
    assert failed[0][0] == "response.failed" and failed[0][1]["response"]["error"]["code"] == code


# -- Gemini's thought signatures -----------------------------------------------------------------


def test_gemini_thought_signatures_ride_on_call_ids_and_go_back_with_the_call():
    provider = GoogleProvider()
    answer = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "thinking", "thought": True},
                        {"functionCall": {"name": "Read", "args": {"f": 1}}, "thoughtSignature": "Ab+/c9=="},
                    ],
                },
                "finishReason": "STOP",
            }
        ]
    }
    call = provider.parse_chat(answer, "gemini-2.5-pro").choices[0].message.tool_calls[0]
    assert call.id.startswith("call_") and "+" not in call.id and "/" not in call.id
    chat = messages_api.parse_request(
        {
            "model": "gemini-2.5-pro",
            "max_tokens": 100,
            "messages": [
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": call.id, "name": "Read", "input": {"f": 1}}],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "ok"}]},
            ],
        }
    )
    sent = body_for(provider, chat, "gemini-2.5-pro")["contents"][1]["parts"][0]
    assert sent["thoughtSignature"] == "Ab+/c9==" and sent["functionCall"]["name"] == "Read"


def test_cached_prompt_tokens_reach_a_messages_client_apart_from_input_tokens():
    usage = Usage(100, 5, prompt_details={"cached_tokens": 60})
    answer = ChatResponse("x", "gpt-5", [Choice(0, Message("assistant", "Hi"), "stop")], usage)
    rendered = messages_api.render_message(answer, "gpt-5")["usage"]
    assert rendered == {
        "input_tokens": 40,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
        "output_tokens": 5,
    }


PNG = "iVBORw0KGgo="


def test_images_a_tool_returned_follow_its_result_in_the_user_turn():
    result = {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": [
            {"type": "text", "text": "screenshot.png"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "tool_reference", "tool_name": "WebFetch"},
        ],
    }
    body = dict(CLAUDE_CODE, messages=[*CLAUDE_CODE["messages"][:3], {"role": "user", "content": [result]}])
    chat = messages_api.parse_request(body)
    sent = body_for(OpenAIProvider(), chat, "gpt-5")["messages"][-2:]
    assert sent[0]["role"] == "tool" and "screenshot.png" in sent[0]["content"] and "WebFetch" in sent[0]["content"]
    assert sent[1]["role"] == "user"
    assert sent[1]["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert not any("tool results" in feature for feature in chat.dropped)


def test_images_of_codex_tool_outputs_follow_the_run_of_outputs():
    image = {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}
    request = dict(
        CODEX,
        input=[
            {"type": "message", "role": "user", "content": "Look"},
            {"type": "function_call", "call_id": "a", "name": "view_image", "arguments": "{}"},
            {"type": "function_call", "call_id": "b", "name": "exec_command", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "a", "output": [image]},
            {"type": "function_call_output", "call_id": "b", "output": "ok"},
        ],
    )
    chat = responses_api.parse_request(request).chat
    assert [m.role for m in chat.messages] == ["user", "assistant", "tool", "tool", "user"]
    assert chat.messages[-1].content[1].image_url == f"data:image/png;base64,{PNG}"


def test_a_session_moving_from_gemini_to_another_vendor_keeps_its_calls_matched():
    signed = "call_" + "a" * 24 + "_" + "Zm9v" * 40  # a Gemini call id with its thought signature
    chat = messages_api.parse_request(
        {
            "model": "gpt-5",
            "max_tokens": 100,
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": signed, "name": "Read", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": signed, "content": "ok"}]},
            ],
        }
    )
    openai_body = body_for(OpenAIProvider(), chat, "gpt-5")["messages"]
    call_id = openai_body[1]["tool_calls"][0]["id"]
    assert len(call_id) <= 40 and openai_body[2]["tool_call_id"] == call_id
    translated = dataclasses.replace(chat, anthropic_body=None)  # as from another client API
    anthropic_body = body_for(AnthropicProvider(), translated, "claude-sonnet-4-5")["messages"]
    assert anthropic_body[1]["content"][0]["id"] == anthropic_body[2]["content"][0]["tool_use_id"] == call_id


# -- any shape: a clear 400 or a request, never a crash --------------------------------------------

KEYS = {"type", "role", "content", "text", "name", "id", "input", "tool_use_id", "source", "tools", "namespace",
        "call_id", "arguments", "output", "format", "schema", "effort", "budget_tokens", "parameters", "input_schema",
        "image_url", "definition", "encrypted_content", "tool_name", "media_type", "data"}  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "x", "text", "image", "tool_use", "user"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(sorted(KEYS)), inner, max_size=4),
    max_leaves=12,
)


def _replaced(body: dict, path: list, value) -> dict:
    body = json.loads(json.dumps(body))
    target = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return body


def _paths(value, path=()) -> list[list]:
    found = [list(path)] if path else []
    if isinstance(value, dict):
        for key, sub in value.items():
            found += _paths(sub, (*path, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            found += _paths(sub, (*path, i))
    return found


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["messages", "responses"]), st.data(), JSON)
def test_any_part_of_an_agents_request_in_any_shape_is_translated_or_a_clear_400(api, data, value):
    base = CLAUDE_CODE if api == "messages" else CODEX
    path = data.draw(st.sampled_from(_paths(base)))
    body = _replaced(base, path, value)
    try:
        chat = messages_api.parse_request(body) if api == "messages" else responses_api.parse_request(body).chat
    except InvalidRequest:
        return
    for provider in (OpenAIProvider(), AnthropicProvider(), GoogleProvider()):
        try:
            body_for(provider, dataclasses.replace(chat, anthropic_body=None), "gpt-5")
        except InvalidRequest:
            pass


def test_claudes_thinking_goes_to_a_responses_client_as_a_reasoning_item_and_back_to_claude():
    events = b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        for name, data in [
            ("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 5}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "thinking", "thinking": ""}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "thinking_delta", "thinking": "Look first."}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "signature_delta", "signature": "sig-1"}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("content_block_start", {"type": "content_block_start", "index": 1,
                                     "content_block": {"type": "tool_use", "id": "toolu_9", "name": "exec_command"}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 1}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                               "usage": {"output_tokens": 3}}),
            ("message_stop", {"type": "message_stop"}),
        ]
    )  # fmt: skip
    chunks = list(AnthropicProvider().parse_stream(events.splitlines(), "claude-sonnet-4-5"))
    thinking = {"type": "thinking", "thinking": "Look first.", "signature": "sig-1"}
    assert [c.reasoning for c in chunks if c.reasoning] == [[thinking]]
    req = responses_api.parse_request(dict(CODEX, input=CODEX["input"][:2]))
    stream = responses_api.ResponseEvents(req)
    sent = [event for chunk in chunks for event in stream.chunk(chunk)] + stream.end(Usage(5, 3))
    item = sent[-1][1]["response"]["output"][0]
    assert item["type"] == "reasoning" and "Look first" not in item["encrypted_content"]
    call = {"type": "function_call", "call_id": "toolu_9", "name": "exec_command", "arguments": "{}"}
    result = {"type": "function_call_output", "call_id": "toolu_9", "output": "ok"}
    back = responses_api.parse_request(dict(CODEX, input=[*CODEX["input"][:2], item, call, result]))
    body = body_for(AnthropicProvider(), back.chat, "claude-sonnet-4-5")
    assert body["thinking"]["type"] == "enabled"
    assert body["messages"][1]["content"][0] == thinking and body["messages"][1]["content"][1]["type"] == "tool_use"
    assert "reasoning.encrypted_content" not in back.chat.dropped


def test_a_chat_completions_reasoning_effort_is_claudes_and_geminis_thinking():
    chat = wire.parse_chat_request(
        {"model": "claude-sonnet-4-5", "reasoning_effort": "low", "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert body_for(AnthropicProvider(), chat, "claude-sonnet-4-5")["thinking"] == {
        "type": "enabled",
        "budget_tokens": 2048,
    }
    assert body_for(GoogleProvider(), chat, "gemini-2.5-pro")["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 2048
    }


def test_codex_tool_search_is_a_function_whose_calls_go_back_as_tool_search_calls():
    req = responses_api.parse_request(CODEX)
    call = ToolCall("c5", "tool_search", json.dumps({"query": "goal", "limit": 3}))
    item = responses_api.output_items(Message("assistant", None, [call]), req.chat.client_tools)[0]
    assert item == {
        "type": "tool_search_call",
        "id": item["id"],
        "call_id": "c5",
        "execution": "client",
        "arguments": {"query": "goal", "limit": 3},
        "status": "completed",
    }
    stream = responses_api.ResponseEvents(req)
    sent = stream.chunk(StreamChunk(tool_calls=[ToolCallDelta(0, "c5", "tool_search", '{"query": "go')]))
    sent += stream.chunk(StreamChunk(tool_calls=[ToolCallDelta(0, arguments='al"}')], finish_reason="tool_calls"))
    sent += stream.end(Usage(5, 3))
    assert sent[-1][1]["response"]["output"][0]["arguments"] == {"query": "goal"}


def test_the_tools_a_tool_search_found_can_be_called_next():
    found = {
        "type": "namespace",
        "name": "mcp__cb__",
        "tools": [{"type": "function", "name": "create_token", "description": "Create a token",
                   "parameters": {"type": "object", "properties": {"workflow_id": {"type": "string"}}}}],
    }  # fmt: skip
    history = [
        *CODEX["input"][:2],
        {"type": "tool_search_call", "call_id": "ts1", "execution": "client", "arguments": {"query": "token"}},
        {"type": "tool_search_output", "call_id": "ts1", "execution": "client", "tools": [found]},
    ]
    chat = responses_api.parse_request(dict(CODEX, input=history)).chat
    name = canonical_name("create_token", "mcp__cb__")
    assert name in [t.name for t in chat.tools]
    assert chat.messages[-1].role == "tool" and name in chat.messages[-1].content
    assert chat.messages[-2].tool_calls[0].name == "tool_search"
    body = body_for(AnthropicProvider(), chat, "claude-sonnet-4-5")
    assert [t["name"] for t in body["tools"]].count(name) == 1


def test_code_execution_and_web_fetch_run_on_gemini_and_are_refused_where_nothing_runs_them():
    tools = [
        {"type": "code_execution_20250825", "name": "code_execution"},
        {"type": "web_fetch_20250910", "name": "web_fetch"},
    ]
    chat = messages_api.parse_request(dict(CLAUDE_CODE, tools=tools))
    assert body_for(GoogleProvider(), chat, "gemini-2.5-pro")["tools"] == [{"codeExecution": {}}, {"urlContext": {}}]
    with pytest.raises(InvalidRequest) as caught:
        body_for(OpenAIProvider(), chat, "gpt-5")
    assert "code_execution, web_fetch" in caught.value.message


def test_vendor_tools_beside_client_tools_are_dropped_by_name_where_they_cannot_run():
    tools = [*CLAUDE_CODE["tools"], {"type": "web_fetch_20250910", "name": "web_fetch"}]
    chat = messages_api.parse_request(dict(CLAUDE_CODE, tools=tools))
    body = body_for(GoogleProvider(), chat, "gemini-2.5-pro")
    assert len(body["tools"]) == 1 and "functionDeclarations" in body["tools"][0]
    assert "web_fetch" in chat.dropped
