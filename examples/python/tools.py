"""A tool call round trip: the model asks for a function, we run it, the model answers.

    python examples/python/tools.py "What's the weather in Paris?"

Same variables as chat.py: CB_OPENAI_URL, CB_MODEL, CB_API_KEY. The tool format is
OpenAI's; Circuit Breaker translates it for Anthropic, Gemini and Ollama models.
"""

import json
import os
import sys

import openai
from openai import OpenAI

BASE_URL = os.environ.get("CB_OPENAI_URL", "http://localhost:3000/v1")
MODEL = os.environ.get("CB_MODEL", "gpt-4")

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    }
]


def get_weather(city: str, unit: str = "celsius") -> dict:
    """The local function the model may call (a real one would ask a weather service)."""
    return {"city": city, "temperature": 21 if unit == "celsius" else 70, "unit": unit, "sky": "sunny"}


def main() -> None:
    question = " ".join(sys.argv[1:]) or "What's the weather in Paris?"
    messages = [{"role": "user", "content": question}]
    with OpenAI(base_url=BASE_URL, api_key=os.environ.get("CB_API_KEY", "not-needed")) as client:
        first = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
        reply = first.choices[0].message
        if not reply.tool_calls:
            print(reply.content)  # the model answered without the tool
            return
        messages.append(reply.model_dump(exclude_none=True))
        for call in reply.tool_calls:
            arguments = json.loads(call.function.arguments)
            print(f"-- the model calls {call.function.name}({arguments})")
            result = get_weather(**arguments)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
        final = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    print(final.choices[0].message.content)


if __name__ == "__main__":
    try:
        main()
    except openai.APIConnectionError:
        sys.exit(f"Cannot reach {BASE_URL}: is the server running (make run)?")
    except openai.APIStatusError as error:  # e.g. a model whose provider has no key: the message says which
        sys.exit(f"The server answered {error.status_code}: {error.message}")
