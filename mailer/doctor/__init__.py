"""`mailer doctor`: will receivers trust mail from this sender? DNS (SPF, DKIM, DMARC, MX, the
tracking host) and the Gmail/Yahoo/Microsoft bulk-sender checklist, each finding ok, warn or
fail with the fix."""
