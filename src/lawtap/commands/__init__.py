"""Click command groups that the lead registers on ``lawtap.cli.main``."""
