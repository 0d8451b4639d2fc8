"""Pure translation: upstream frames -> typed events -> answer events -> OpenAI chunks -> SSE bytes."""
