"""One chat's lifecycle: pick the tone, compose the upstream request, run the turn."""
