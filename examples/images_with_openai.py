"""Pictures in and out through the service with the official `openai` client.

BASE_URL=http://127.0.0.1:22222/v1 API_KEY=sk-anything python examples/images_with_openai.py [picture.png]

Try it against the demo (`python -m apis.chat_api --demo`): its emulator describes and draws.
"""

import base64
import os
import sys

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("BASE_URL", "http://127.0.0.1:22222/v1"),
    api_key=os.environ.get("API_KEY", "sk-no-key-needed"),
)

# Vision: a picture from disk as a `data:` URL (an https URL works too), with a question about it.
if len(sys.argv) > 1:
    with open(sys.argv[1], "rb") as file:
        picture = "data:image/png;base64," + base64.b64encode(file.read()).decode()
    answer = client.chat.completions.create(
        model="creative",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": picture}},
                ],
            }
        ],
    )
    print(answer.choices[0].message.content)

# Drawing in chat: Bing's answer gets the pictures as markdown images.
drawn = client.chat.completions.create(
    model="creative", messages=[{"role": "user", "content": "Draw a lighthouse at dawn"}]
)
print(drawn.choices[0].message.content)

# The images API: Bing's Image Creator (or Copilot, with model="copilot").
result = client.images.generate(prompt="a lighthouse at dawn, watercolour", n=2)
for item in result.data or []:
    print(item.url)
encoded = client.images.generate(prompt="a lighthouse at dawn", response_format="b64_json")
with open("lighthouse.png", "wb") as out:
    out.write(base64.b64decode((encoded.data or [])[0].b64_json or ""))
print("saved lighthouse.png")
