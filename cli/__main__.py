"""``python -m tworec.cli``: the ``tworec`` command."""
import sys

from tworec.cli.main import main

sys.exit(main())
