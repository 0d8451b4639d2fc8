"""Chat through the service with plain HTTP (httpx), reading the SSE stream by hand.

BASE_URL=http://127.0.0.1:22222/v1 API_KEY=sk-anything python examples/chat_with_post.py
"""

import json
import os

import httpx

base_url = os.environ.get("BASE_URL", "http://127.0.0.1:22222/v1").rstrip("/")
headers = {"Authorization": f"Bearer {os.environ.get('API_KEY', 'sk-no-key-needed')}"}
payload = {
    "model": "creative",
    "messages": [{"role": "user", "content": "Search for today's weather in California."}],
    "stream": True,
}

with httpx.stream(
    "POST", f"{base_url}/chat/completions", json=payload, headers=headers, timeout=httpx.Timeout(20, read=120)
) as response:
    if response.status_code != 200:
        response.read()
        raise SystemExit(f"HTTP {response.status_code}: {response.json()['error']['message']}")
    for line in response.iter_lines():
        if not line.startswith("data: "):
            continue  # blank separators and ": ping" keep-alive comments
        data = line[len("data: ") :]
        if data == "[DONE]":
            break
        event = json.loads(data)
        if "error" in event:
            raise SystemExit(f"\nupstream error: {event['error']['message']}")
        choice = event["choices"][0] if event["choices"] else {}
        print(choice.get("delta", {}).get("content") or "", end="", flush=True)
print()
