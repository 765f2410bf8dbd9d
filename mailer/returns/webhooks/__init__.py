"""Bounces and complaints reported by an ESP the relay is (SES through SNS, Postmark,
SendGrid, Mailgun): one module a provider, verified, then acted on as returned mail is."""
