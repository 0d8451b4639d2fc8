"""Performance benchmark: the proxy next to a direct Bing client, both against the local emulator.

Run `python -m benchmarks.run` (about 7 minutes), `--quick` (about 30 s) or `--only NAME`.
"""
