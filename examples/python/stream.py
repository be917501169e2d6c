"""A streamed chat completion: tokens are printed as they arrive (Server-Sent Events).

    python examples/python/stream.py "Write a short poem"

Same variables as chat.py: CB_OPENAI_URL, CB_MODEL, CB_API_KEY.
"""

import os
import sys

import openai
from openai import OpenAI

BASE_URL = os.environ.get("CB_OPENAI_URL", "http://localhost:3000/v1")
MODEL = os.environ.get("CB_MODEL", "gpt-4")


def main() -> None:
    prompt = " ".join(sys.argv[1:]) or "Write a short poem"
    with OpenAI(base_url=BASE_URL, api_key=os.environ.get("CB_API_KEY", "not-needed")) as client:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            stream_options={"include_usage": True},  # one last chunk carries the token counts
        )
        chunks, usage = 0, None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                chunks += 1
                print(chunk.choices[0].delta.content, end="", flush=True)
            if chunk.usage:
                usage = chunk.usage
    print()
    tokens = f", {usage.completion_tokens} completion tokens" if usage else ""
    print(f"-- {chunks} content chunks{tokens}")


if __name__ == "__main__":
    try:
        main()
    except openai.APIConnectionError:
        sys.exit(f"Cannot reach {BASE_URL}: is the server running (make run)?")
    except openai.APIStatusError as error:  # e.g. a model whose provider has no key: the message says which
        sys.exit(f"The server answered {error.status_code}: {error.message}")
