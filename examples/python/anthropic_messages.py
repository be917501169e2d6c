"""Anthropic's Messages API through Circuit Breaker, with the official `anthropic` package,
for any model the gateway serves (Claude, GPT, Gemini, Ollama models).

    python examples/python/anthropic_messages.py "What is a Petri net?"

CB_ANTHROPIC_URL (default http://localhost:3000: the OpenAI port, without /v1) is the server;
CB_MODEL (default gpt-4) names the model. Claude Code uses the same endpoint:
``ANTHROPIC_BASE_URL=http://localhost:3000 ANTHROPIC_AUTH_TOKEN=<client key> claude``.
"""

import os
import sys

import anthropic

BASE_URL = os.environ.get("CB_ANTHROPIC_URL", "http://localhost:3000")
MODEL = os.environ.get("CB_MODEL", "gpt-4")


def main() -> None:
    question = " ".join(sys.argv[1:]) or "Hello, how are you?"
    with anthropic.Anthropic(base_url=BASE_URL, api_key=os.environ.get("CB_API_KEY", "not-needed")) as client:
        with client.messages.stream(
            model=MODEL, max_tokens=512, system="Be brief.", messages=[{"role": "user", "content": question}]
        ) as stream:
            for text in stream.text_stream:
                print(text, end="", flush=True)
            message = stream.get_final_message()
    print()
    print(f"-- {message.stop_reason}, {message.usage.input_tokens} input + {message.usage.output_tokens} output tokens")


if __name__ == "__main__":
    try:
        main()
    except anthropic.APIConnectionError:
        sys.exit(f"Cannot reach {BASE_URL}: is the server running (make run)?")
    except anthropic.APIStatusError as error:
        sys.exit(f"The server answered {error.status_code}: {error.message}")
