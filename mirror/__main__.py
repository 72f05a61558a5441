"""`python -m mirror`: the same as the acta-mirror command."""
import sys

from .cli import main

sys.exit(main())
