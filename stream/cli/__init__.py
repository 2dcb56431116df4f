"""The ``streamscore`` command line: the parser (``stream.cli.main``) and its commands.

``main`` and ``build_parser`` are handed on here so the script entry point
(``stream.cli:main``) and ``python -m stream.cli`` stay what they were.
"""

from stream.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
