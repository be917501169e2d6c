"""A first chat completion through Circuit Breaker with the official `openai` package.

    python examples/python/chat.py "What is a Petri net?"

CB_OPENAI_URL (default http://localhost:3000/v1) is the server; CB_MODEL (default gpt-4)
names the model: any model a provider lists (``gpt-5``, ``claude-sonnet-4-5``),
``provider/model`` or a virtual model such as ``auto``. CB_API_KEY is only checked when the
server sets OPENAI_API_KEY_REQUIRED=true.
"""

import os
import sys

import openai
from openai import OpenAI

BASE_URL = os.environ.get("CB_OPENAI_URL", "http://localhost:3000/v1")
MODEL = os.environ.get("CB_MODEL", "gpt-4")


def main() -> None:
    question = " ".join(sys.argv[1:]) or "Hello, how are you?"
    with OpenAI(base_url=BASE_URL, api_key=os.environ.get("CB_API_KEY", "not-needed")) as client:
        # with_raw_response also gives the headers: Circuit Breaker says where it routed the request
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": question}]
        )
        completion = raw.parse()
    print(completion.choices[0].message.content)
    print(
        f"-- model {completion.model} via {raw.headers.get('x-cb-provider')}, "
        f"{completion.usage.prompt_tokens} prompt + {completion.usage.completion_tokens} completion tokens"
    )


if __name__ == "__main__":
    try:
        main()
    except openai.APIConnectionError:
        sys.exit(f"Cannot reach {BASE_URL}: is the server running (make run)?")
    except openai.APIStatusError as error:  # e.g. a model whose provider has no key: the message says which
        sys.exit(f"The server answered {error.status_code}: {error.message}")
