"""The OpenAI-shaped HTTP front: app factory, routes, schemas, error mapping."""

__version__ = "0.1.0"
