"""Chat through the service with the official `openai` client, streamed and not, Bing and Copilot.

BASE_URL=http://127.0.0.1:22222/v1 API_KEY=sk-anything python examples/chat_with_openai.py
"""

import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("BASE_URL", "http://127.0.0.1:22222/v1"),
    api_key=os.environ.get("API_KEY", "sk-no-key-needed"),
)
messages = [
    {"role": "system", "content": "Answer in two sentences."},
    {"role": "user", "content": "What is the tallest mountain on Earth?"},
]

# Streamed: print the text as it arrives.
stream = client.chat.completions.create(model="precise", messages=messages, stream=True)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()

# Not streamed: one object, with estimated usage and Bing's sources under `bing`.
completion = client.chat.completions.create(model="balanced-offline", messages=messages)
print(completion.choices[0].message.content)
print("usage:", completion.usage)
print("sources:", (completion.model_extra or {}).get("bing", {}).get("sources"))

# Copilot's Think Deeper: the reasoning streams apart from the answer, as `reasoning_content`.
# (Needs a Copilot account: COPILOT_ACCESS_TOKEN or COPILOT_COOKIES, or the `--demo` service.)
for chunk in client.chat.completions.create(model="copilot-reasoning", messages=messages, stream=True):
    delta = chunk.choices[0].delta if chunk.choices else None
    if delta is not None and getattr(delta, "reasoning_content", None):
        print(f"[thinking] {delta.reasoning_content}", flush=True)
    elif delta is not None and delta.content:
        print(delta.content, end="", flush=True)
print()
