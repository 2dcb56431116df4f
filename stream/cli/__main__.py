"""``python -m stream.cli``: the ``streamscore`` script without the installed entry point."""

import sys

from stream.cli.main import main

sys.exit(main())
