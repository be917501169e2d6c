"""Embeddings: vectors for a few sentences, and how alike they are.

    python examples/python/embeddings.py

CB_OPENAI_URL and CB_API_KEY as in chat.py; CB_EMBEDDING_MODEL (default
text-embedding-3-small; e.g. nomic-embed-text with Ollama) names the model.
"""

import math
import os
import sys

import openai
from openai import OpenAI

BASE_URL = os.environ.get("CB_OPENAI_URL", "http://localhost:3000/v1")
MODEL = os.environ.get("CB_EMBEDDING_MODEL", "text-embedding-3-small")

SENTENCES = ["The token moved to review.", "A document waits for its reviewer.", "Bananas are yellow."]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)) or 1.0)


def main() -> None:
    with OpenAI(base_url=BASE_URL, api_key=os.environ.get("CB_API_KEY", "not-needed")) as client:
        result = client.embeddings.create(model=MODEL, input=SENTENCES)
    vectors = [item.embedding for item in result.data]
    print(
        f"{len(vectors)} vectors of {len(vectors[0])} dimensions from {result.model} "
        f"({result.usage.prompt_tokens} tokens)"
    )
    for i, text in enumerate(SENTENCES[1:], start=1):
        print(f"similarity({SENTENCES[0]!r}, {text!r}) = {cosine(vectors[0], vectors[i]):.3f}")


if __name__ == "__main__":
    try:
        main()
    except openai.APIConnectionError:
        sys.exit(f"Cannot reach {BASE_URL}: is the server running (make run)?")
    except openai.APIStatusError as error:  # e.g. a model whose provider has no key: the message says which
        sys.exit(f"The server answered {error.status_code}: {error.message}")
