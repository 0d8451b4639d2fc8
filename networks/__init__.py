"""The only code that touches the network: conversation create (httpx) and the ChatHub websocket."""
