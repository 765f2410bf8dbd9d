"""The one exception hierarchy: errors a user can cause, each with a place and a fix.

The CLI turns every `MailerError` into exit status 1 and one line on stderr.
"""


class MailerError(Exception):
    """Something the user can fix; the message says where and how."""


class SettingsError(MailerError):
    """settings.toml (or an environment override) is invalid."""


class InputFileError(MailerError):
    """A file given to mailer cannot be read at all (missing, no email column, ...)."""


class UnknownContactError(MailerError):
    """No contact (and no trace of one) is held for this address."""


class LedgerError(MailerError):
    """The consent ledger cannot be appended to or read as asked."""
