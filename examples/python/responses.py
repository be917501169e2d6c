"""OpenAI's Responses API through Circuit Breaker, with the official `openai` package, for any
model: a response, then a second one that continues it with ``previous_response_id``.

    python examples/python/responses.py "My name is Ada."

CB_OPENAI_URL (default http://localhost:3000/v1) is the server; CB_MODEL (default gpt-4)
names the model. On an OpenAI deployment the gateway relays the Responses API itself and
OpenAI keeps the responses; for other vendors the gateway keeps them for
RESPONSES_RETENTION_SECONDS.
"""

import os
import sys

import openai
from openai import OpenAI

BASE_URL = os.environ.get("CB_OPENAI_URL", "http://localhost:3000/v1")
MODEL = os.environ.get("CB_MODEL", "gpt-4")


def main() -> None:
    said = " ".join(sys.argv[1:]) or "My name is Ada."
    with OpenAI(base_url=BASE_URL, api_key=os.environ.get("CB_API_KEY", "not-needed")) as client:
        first = client.responses.create(model=MODEL, instructions="Be brief.", input=said)
        print(first.output_text)
        with client.responses.stream(model=MODEL, previous_response_id=first.id, input="What is my name?") as stream:
            for event in stream:
                if event.type == "response.output_text.delta":
                    print(event.delta, end="", flush=True)
            second = stream.get_final_response()
    print()
    print(
        f"-- {first.id} then {second.id}, {second.usage.input_tokens} input + "
        f"{second.usage.output_tokens} output tokens"
    )


if __name__ == "__main__":
    try:
        main()
    except openai.APIConnectionError:
        sys.exit(f"Cannot reach {BASE_URL}: is the server running (make run)?")
    except openai.APIStatusError as error:
        sys.exit(f"The server answered {error.status_code}: {error.message}")
