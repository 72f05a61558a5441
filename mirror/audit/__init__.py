"""Audit of a mirror: decode each acta's QR code, tally the votes, cross-check, build a site."""
