"""mailer: email marketing automation whose campaigns live in version-controlled files."""

__version__ = "0.1.0"
