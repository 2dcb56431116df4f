"""Development infrastructure: embedded broker and Redis, ``dev up|down|status``, the demo.

Never imported by the scoring path (worker, core, kafka, drift).
"""

__all__: list[str] = []
