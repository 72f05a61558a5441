"""acta-mirror: crawl published election tally sheets into verifiable, replicated mirrors."""
__version__ = "0.1.0"

from .models import Acta, Entry, Fetched, MirrorError, Problem  # noqa: E402,F401
