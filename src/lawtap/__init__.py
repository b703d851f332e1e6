"""lawtap: accountable lawful interception and network forensics, strictly passive."""

__version__ = "0.1.0"
