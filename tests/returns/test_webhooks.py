"""Provider webhooks over real HTTP (uvicorn): SES through SNS, Postmark, SendGrid, Mailgun.
For each, a signed event acts as returned mail does; a forged one and a replayed one are
refused and change nothing. Keys are made here; nothing is fetched from the network."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select, update

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.retention import run_retention
from mailer.returns.webhooks.ses import SIGNED, may_confirm
from mailer.store.tables import outbox, returned_messages, webhook_deliveries
from mailer.tracking.app import create_app
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.returns.test_effects import sent, standing
from tests.tracking.conftest import running

TOPIC = "arn:aws:sns:eu-west-1:123456789012:mailer-bounces"
POSTMARK_PASSWORD = "postmark-hook-password-0123456789"
MAILGUN_KEY = "key-mailgun-signing-0123456789abcdef"
ADA = "ada@example.com"


class Keys:
    """The providers' keys, made for the test: SNS's certificate, SendGrid's ECDSA key."""

    def __init__(self, folder: Path) -> None:
        self.sns = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.sns.public_key()).serial_number(1)
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=365))
            .sign(self.sns, hashes.SHA256())
        )  # fmt: skip
        self.certificate_file = folder / "sns-signing.pem"
        self.certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        self.sendgrid = ec.generate_private_key(ec.SECP256R1())
        self.sendgrid_public = base64.b64encode(self.sendgrid.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo,
        )).decode()  # fmt: skip


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@pytest.fixture
def hooked(project: Path, environ: dict[str, str], keys: Keys) -> Iterator[Workspace]:
    """A workspace with every webhook on (SES for the configured topic only)."""
    settings = load_settings(project / "settings.toml", environ={
        **environ,
        "MAILER_WEBHOOKS__SES__ENABLED": "true",
        "MAILER_WEBHOOKS__SES__CERTIFICATE_FILE": str(keys.certificate_file),
        "MAILER_WEBHOOKS__SES__TOPIC_ARN": TOPIC,
        "MAILER_WEBHOOKS__POSTMARK__ENABLED": "true",
        "MAILER_WEBHOOKS__POSTMARK__PASSWORD": POSTMARK_PASSWORD,
        "MAILER_WEBHOOKS__SENDGRID__ENABLED": "true",
        "MAILER_WEBHOOKS__SENDGRID__PUBLIC_KEY": keys.sendgrid_public,
        "MAILER_WEBHOOKS__MAILGUN__ENABLED": "true",
        "MAILER_WEBHOOKS__MAILGUN__SIGNING_KEY": MAILGUN_KEY,
    })  # fmt: skip
    workspace = Workspace(settings, FrozenClock(NOW))
    yield workspace
    workspace.close()


@pytest.fixture
def ada(hooked: Workspace, project: Path) -> int:
    """Ada was sent the welcome message (Message-ID <welcome-ada@acme.example>): its id."""
    outbox_id = sent(hooked, project, "newsletter", [ADA])[ADA]
    with hooked.engine.begin() as connection:
        connection.execute(update(outbox).where(outbox.c.id == outbox_id)
                           .values(message_id="<welcome-ada@acme.example>"))  # fmt: skip
    return outbox_id


@pytest.fixture
def client(hooked: Workspace) -> Iterator[httpx.Client]:
    with running(create_app(hooked)) as base_url, httpx.Client(base_url=base_url) as http:
        yield http


def returns_recorded(workspace: Workspace) -> int:
    with workspace.engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(returned_messages)) or 0)


def calls_remembered(workspace: Workspace) -> int:
    with workspace.engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(webhook_deliveries)) or 0)


# SES through SNS ------------------------------------------------------------------------


def sns(keys: Keys, kind: str, fields: dict[str, str], version: str = "2",
        at: datetime = NOW) -> dict[str, str]:  # fmt: skip
    message = {"Type": kind, "MessageId": secrets.token_hex(16), "TopicArn": TOPIC,
               "Timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"), **fields,
               "SignatureVersion": version,
               "SigningCertURL": "https://attacker.example/cert.pem"}  # fmt: skip
    signed = "".join(f"{key}\n{message[key]}\n" for key in SIGNED[kind] if key in message)
    digest = hashes.SHA256() if version == "2" else hashes.SHA1()
    signature = keys.sns.sign(signed.encode(), padding.PKCS1v15(), digest)
    return message | {"Signature": base64.b64encode(signature).decode()}


def ses_bounce(bounce_type: str = "Permanent") -> str:
    return json.dumps({
        "notificationType": "Bounce",
        "bounce": {"bounceType": bounce_type, "bounceSubType": "General",
                   "bouncedRecipients": [{"emailAddress": "Ada@Example.com", "action": "failed",
                                          "status": "5.1.1", "diagnosticCode":
                                          "smtp; 550 5.1.1 <ada@example.com>: no such user"}],
                   "timestamp": "2026-11-23T09:59:00.000Z", "feedbackId": "0102-bounce"},
        "mail": {"timestamp": "2026-11-23T09:00:00.000Z", "messageId": "0102-ses-own-id",
                 "source": "news@acme.example",
                 "headers": [{"name": "Message-ID", "value": "<welcome-ada@acme.example>"}]},
    })  # fmt: skip


def test_ses_permanent_bounce_suppresses_by_our_message_id(
    client: httpx.Client, hooked: Workspace, keys: Keys, ada: int
) -> None:
    message = sns(keys, "Notification", {"Message": ses_bounce()})
    answer = client.post("/webhooks/ses", content=json.dumps(message))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"events": 1, "ignored": 0, "actions": ["suppressed (hard bounce)"]}
    assert standing(hooked, ADA)[1] == "hard_bounce"
    with hooked.engine.connect() as connection:
        row = connection.execute(select(returned_messages)).one()
    assert (row.outbox_id, row.classification, row.status_code) == (ada, "hard", "5.1.1")


def test_ses_signature_version_1_and_a_complaint(
    client: httpx.Client, hooked: Workspace, keys: Keys, ada: int
) -> None:
    notice = json.dumps(
        {
            "notificationType": "Complaint",
            "complaint": {
                "complainedRecipients": [{"emailAddress": ADA}],
                "complaintFeedbackType": "abuse",
                "userAgent": "Yahoo!-Mail-Feedback/2.0",
                "feedbackId": "0102-complaint",
            },
            "mail": {
                "messageId": "0102-ses-own-id",
                "source": "news@acme.example",
                "headers": [{"name": "Message-ID", "value": "<welcome-ada@acme.example>"}],
            },
        }
    )
    message = sns(keys, "Notification", {"Message": notice, "Subject": "Complaint"}, "1")
    answer = client.post("/webhooks/ses", content=json.dumps(message))
    assert answer.json()["actions"] == ["complaint: withdrawn from every list and suppressed"]
    assert standing(hooked, ADA) == ({"newsletter": "withdrawn"}, "complained")


@pytest.mark.parametrize("forgery", ["signature", "message", "topic", "version"])
def test_ses_forged_notification_is_refused_and_changes_nothing(
    client: httpx.Client, hooked: Workspace, keys: Keys, ada: int, forgery: str
) -> None:
    message = sns(keys, "Notification", {"Message": ses_bounce()})
    if forgery == "signature":  # signed by someone else's key, naming his certificate
        other = sns(Keys(hooked.settings.root), "Notification", {"Message": ses_bounce()})
        message = other
    elif forgery == "message":
        message["Message"] = ses_bounce("Transient")
    elif forgery == "topic":
        message = sns(keys, "Notification", {"Message": ses_bounce(),
                                              "TopicArn": TOPIC + "-other"})  # fmt: skip
    else:
        message["SignatureVersion"] = "3"
    answer = client.post("/webhooks/ses", content=json.dumps(message))
    assert answer.status_code == 403, answer.text
    assert standing(hooked, ADA)[1] is None
    assert (returns_recorded(hooked), calls_remembered(hooked)) == (0, 0)


def test_ses_replayed_or_stale_notification_is_refused(
    client: httpx.Client, hooked: Workspace, keys: Keys, ada: int
) -> None:
    message = sns(keys, "Notification", {"Message": ses_bounce("Transient")})
    assert client.post("/webhooks/ses", content=json.dumps(message)).json()["actions"] == [
        "soft bounce 1 of 3 within 1w"]  # fmt: skip
    replay = client.post("/webhooks/ses", content=json.dumps(message))
    assert replay.status_code == 409, replay.text
    stale = sns(keys, "Notification", {"Message": ses_bounce()}, at=NOW - timedelta(minutes=6))
    assert client.post("/webhooks/ses", content=json.dumps(stale)).status_code == 409
    assert returns_recorded(hooked) == 1
    assert standing(hooked, ADA)[1] is None


def test_ses_subscription_confirmation_is_logged_for_the_operator(
    client: httpx.Client, hooked: Workspace, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    url = ("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
           f"&TopicArn={TOPIC}&Token=2336412f37")  # fmt: skip
    message = sns(keys, "SubscriptionConfirmation", {
        "Message": "You have chosen to subscribe to the topic", "Token": "2336412f37",
        "SubscribeURL": url})  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="mailer"):
        answer = client.post("/webhooks/ses", content=json.dumps(message))
    assert answer.json() == {"subscription": "logged"}
    assert any(url in record.getMessage() for record in caplog.records)
    forged = message | {"SubscribeURL": "https://attacker.example/confirm"}
    assert client.post("/webhooks/ses", content=json.dumps(forged)).status_code == 403
    assert client.post("/webhooks/ses", content=json.dumps(message)).status_code == 409


def test_ses_confirmation_visits_only_an_amazonaws_address(
    project: Path, environ: dict[str, str], keys: Keys
) -> None:
    """Even with confirm_subscriptions on, a signed message naming another host (here a
    server of ours on loopback) is not visited: it is logged instead."""
    visits: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            visits.append(self.path)
            self.send_response(200)
            self.end_headers()

    listener = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    settings = load_settings(project / "settings.toml", environ={
        **environ, "MAILER_WEBHOOKS__SES__ENABLED": "true",
        "MAILER_WEBHOOKS__SES__CERTIFICATE_FILE": str(keys.certificate_file),
        "MAILER_WEBHOOKS__SES__CONFIRM_SUBSCRIPTIONS": "true"})  # fmt: skip
    workspace = Workspace(settings, FrozenClock(NOW))
    url = f"http://127.0.0.1:{listener.server_address[1]}/?Action=ConfirmSubscription"
    message = sns(keys, "SubscriptionConfirmation", {"Message": "confirm", "Token": "t",
                                                     "SubscribeURL": url})  # fmt: skip
    try:
        with running(create_app(workspace)) as base_url, httpx.Client(base_url=base_url) as http:
            answer = http.post("/webhooks/ses", content=json.dumps(message))
        assert answer.json() == {"subscription": "logged"}
        assert visits == []
    finally:
        listener.shutdown()
        listener.server_close()
        workspace.close()
    assert may_confirm("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription")
    assert not may_confirm("http://sns.eu-west-1.amazonaws.com/")
    assert not may_confirm("https://amazonaws.com.attacker.example/")


# Postmark -------------------------------------------------------------------------------


def postmark_bounce(record_id: int = 4323372036854775807, kind: str = "HardBounce") -> str:
    return json.dumps({
        "RecordType": "Bounce", "ID": record_id, "Type": kind, "TypeCode": 1,
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Email": ADA,
        "From": "news@acme.example", "BouncedAt": "2026-11-23T09:59:00Z",
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Inactive": True, "CanActivate": True, "MessageStream": "outbound",
    })  # fmt: skip


def test_postmark_hard_bounce_with_basic_auth_suppresses(
    client: httpx.Client, hooked: Workspace, ada: int
) -> None:
    answer = client.post("/webhooks/postmark", content=postmark_bounce(),
                         auth=("postmark", POSTMARK_PASSWORD))  # fmt: skip
    assert answer.json()["actions"] == ["suppressed (hard bounce)"], answer.text
    assert standing(hooked, ADA)[1] == "hard_bounce"


def test_postmark_spam_complaint_withdraws(
    client: httpx.Client, hooked: Workspace, ada: int
) -> None:
    complaint = json.loads(postmark_bounce(42, "SpamComplaint")) | {"RecordType": "SpamComplaint"}
    answer = client.post("/webhooks/postmark", content=json.dumps(complaint),
                         auth=("postmark", POSTMARK_PASSWORD))  # fmt: skip
    assert answer.json()["actions"] == ["complaint: withdrawn from every list and suppressed"]
    assert standing(hooked, ADA)[1] == "complained"


def test_postmark_wrong_credentials_and_replay_are_refused(
    client: httpx.Client, hooked: Workspace, ada: int
) -> None:
    wrong = client.post("/webhooks/postmark", content=postmark_bounce(),
                        auth=("postmark", "guessed"))  # fmt: skip
    missing = client.post("/webhooks/postmark", content=postmark_bounce())
    assert (wrong.status_code, missing.status_code) == (401, 401)
    assert wrong.headers["www-authenticate"].startswith("Basic")
    assert standing(hooked, ADA)[1] is None and returns_recorded(hooked) == 0
    soft = postmark_bounce(7, "SoftBounce")
    assert client.post("/webhooks/postmark", content=soft,
                       auth=("postmark", POSTMARK_PASSWORD)).status_code == 200  # fmt: skip
    replay = client.post("/webhooks/postmark", content=soft, auth=("postmark", POSTMARK_PASSWORD))
    assert replay.status_code == 409
    assert returns_recorded(hooked) == 1


def test_a_postmark_call_sent_again_after_retention_forgot_it_acts_on_nothing_twice(
    client: httpx.Client, hooked: Workspace, ada: int
) -> None:
    """Retention forgets the call a day later (webhook_deliveries); Postmark's calls carry no
    signature time, so the same call is then accepted, and its bounce, remembered by its
    digest in returned_messages, changes nothing again."""
    soft, auth = postmark_bounce(7, "SoftBounce"), ("postmark", POSTMARK_PASSWORD)
    first = client.post("/webhooks/postmark", content=soft, auth=auth)
    assert first.status_code == 200, first.text
    later = hooked.clock.now() + timedelta(days=2)
    assert run_retention(hooked.engine, hooked.settings, later).webhook_calls == 1
    again = client.post("/webhooks/postmark", content=soft, auth=auth)
    assert again.status_code == 200, again.text
    assert again.json()["actions"] == [f"none (already processed: {first.json()['actions'][0]})"]
    assert returns_recorded(hooked) == 1


# SendGrid -------------------------------------------------------------------------------


def sendgrid_post(client: httpx.Client, keys: Keys, events: list[dict[str, Any]],
                  at: datetime = NOW, key: ec.EllipticCurvePrivateKey | None = None,
                  body: bytes | None = None) -> httpx.Response:  # fmt: skip
    payload = json.dumps(events).encode()
    timestamp = str(int(at.timestamp()))
    signature = (key or keys.sendgrid).sign(timestamp.encode() + payload,
                                            ec.ECDSA(hashes.SHA256()))  # fmt: skip
    return client.post("/webhooks/sendgrid", content=body or payload, headers={
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json"})  # fmt: skip


SENDGRID_BOUNCE = {
    "email": ADA, "timestamp": 1795514340, "smtp-id": "<welcome-ada@acme.example>",
    "event": "bounce", "type": "bounce", "status": "5.1.1", "sg_event_id": "sg-bounce-1",
    "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    "reason": "550 5.1.1 The email account that you tried to reach does not exist",
}  # fmt: skip


def test_sendgrid_signed_bounce_suppresses_and_other_events_are_ignored(
    client: httpx.Client, hooked: Workspace, keys: Keys, ada: int
) -> None:
    delivered = {"email": ADA, "event": "delivered", "sg_event_id": "sg-delivered-1"}
    answer = sendgrid_post(client, keys, [delivered, SENDGRID_BOUNCE])
    assert answer.json() == {"events": 1, "ignored": 1, "actions": ["suppressed (hard bounce)"]}
    assert standing(hooked, ADA)[1] == "hard_bounce"


def test_sendgrid_spamreport_is_a_complaint(
    client: httpx.Client, hooked: Workspace, keys: Keys, ada: int
) -> None:
    report = {"email": ADA, "event": "spamreport", "sg_event_id": "sg-spam-1",
              "smtp-id": "<welcome-ada@acme.example>"}  # fmt: skip
    answer = sendgrid_post(client, keys, [report])
    assert answer.json()["actions"] == ["complaint: withdrawn from every list and suppressed"]


@pytest.mark.parametrize("forgery", ["key", "body", "none"])
def test_sendgrid_forged_call_is_refused(
    client: httpx.Client, hooked: Workspace, keys: Keys, ada: int, forgery: str
) -> None:
    if forgery == "key":
        answer = sendgrid_post(client, keys, [SENDGRID_BOUNCE],
                               key=ec.generate_private_key(ec.SECP256R1()))  # fmt: skip
    elif forgery == "body":  # a signed call carrying another event
        other = json.dumps([SENDGRID_BOUNCE | {"email": "ken@example.com"}]).encode()
        answer = sendgrid_post(client, keys, [SENDGRID_BOUNCE], body=other)
    else:
        answer = client.post("/webhooks/sendgrid", content=json.dumps([SENDGRID_BOUNCE]))
    assert answer.status_code == 403, answer.text
    assert standing(hooked, ADA)[1] is None and returns_recorded(hooked) == 0


def test_sendgrid_replayed_or_stale_call_is_refused(
    client: httpx.Client, hooked: Workspace, keys: Keys, ada: int
) -> None:
    blocked = SENDGRID_BOUNCE | {"type": "blocked", "status": "4.7.1"}
    payload = json.dumps([blocked]).encode()
    timestamp = str(int(NOW.timestamp()))
    signature = base64.b64encode(keys.sendgrid.sign(
        timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))).decode()  # fmt: skip
    headers = {"X-Twilio-Email-Event-Webhook-Signature": signature,
               "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}  # fmt: skip
    first = client.post("/webhooks/sendgrid", content=payload, headers=headers)
    assert first.json()["actions"] == ["soft bounce 1 of 3 within 1w"]
    assert client.post("/webhooks/sendgrid", content=payload, headers=headers).status_code == 409
    stale = sendgrid_post(client, keys, [SENDGRID_BOUNCE], at=NOW - timedelta(minutes=6))
    assert stale.status_code == 409
    assert returns_recorded(hooked) == 1 and standing(hooked, ADA)[1] is None


# Mailgun --------------------------------------------------------------------------------


def mailgun(event: dict[str, Any], at: datetime = NOW, key: str = MAILGUN_KEY,
            token: str | None = None) -> dict[str, Any]:  # fmt: skip
    timestamp, token = str(int(at.timestamp())), token or secrets.token_hex(25)
    digest = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": timestamp, "token": token, "signature": digest},
            "event-data": event}  # fmt: skip


def mailgun_failed(severity: str = "permanent") -> dict[str, Any]:
    return {
        "event": "failed", "id": "G9Bn5sl1TC6nu79C8C0bwg", "severity": severity,
        "recipient": ADA, "reason": "bounce", "timestamp": 1795514340.0,
        "delivery-status": {"code": 550, "message": "5.1.1 The email account does not exist"},
        "message": {"headers": {"message-id": "welcome-ada@acme.example"}},
    }  # fmt: skip


def test_mailgun_permanent_failure_suppresses_and_temporary_changes_nothing(
    client: httpx.Client, hooked: Workspace, ada: int
) -> None:
    temporary = client.post("/webhooks/mailgun", json=mailgun(mailgun_failed("temporary")
                                                               | {"id": "temp-1"}))  # fmt: skip
    assert temporary.json()["actions"] == ["none (delay warning)"]
    assert standing(hooked, ADA)[1] is None
    answer = client.post("/webhooks/mailgun", json=mailgun(mailgun_failed()))
    assert answer.json()["actions"] == ["suppressed (hard bounce)"], answer.text
    assert standing(hooked, ADA)[1] == "hard_bounce"


def test_mailgun_complaint_withdraws(client: httpx.Client, hooked: Workspace, ada: int) -> None:
    event = {"event": "complained", "id": "c-1", "recipient": ADA,
             "message": {"headers": {"message-id": "welcome-ada@acme.example"}}}  # fmt: skip
    answer = client.post("/webhooks/mailgun", json=mailgun(event))
    assert answer.json()["actions"] == ["complaint: withdrawn from every list and suppressed"]


def test_mailgun_forged_replayed_or_stale_call_is_refused(
    client: httpx.Client, hooked: Workspace, ada: int
) -> None:
    forged = client.post("/webhooks/mailgun", json=mailgun(mailgun_failed(), key="guessed"))
    assert forged.status_code == 403
    first = mailgun(mailgun_failed("temporary"))
    assert client.post("/webhooks/mailgun", json=first).status_code == 200
    # The signature covers the token, not the event: a captured one cannot carry another event.
    replay = first | {"event-data": mailgun_failed()}
    assert client.post("/webhooks/mailgun", json=replay).status_code == 409
    stale = mailgun(mailgun_failed(), at=NOW - timedelta(minutes=6))
    assert client.post("/webhooks/mailgun", json=stale).status_code == 409
    assert standing(hooked, ADA)[1] is None and returns_recorded(hooked) == 1


# Settings -------------------------------------------------------------------------------


def test_a_disabled_provider_answers_404(
    project: Path, environ: dict[str, str], workspace: Workspace
) -> None:
    with running(create_app(workspace)) as base_url, httpx.Client(base_url=base_url) as http:
        for name in ("ses", "postmark", "sendgrid", "mailgun"):
            assert http.post(f"/webhooks/{name}", content=b"{}").status_code == 404


def test_an_enabled_provider_without_its_key_answers_503(
    project: Path, environ: dict[str, str]
) -> None:
    settings = load_settings(
        project / "settings.toml", environ={**environ, "MAILER_WEBHOOKS__MAILGUN__ENABLED": "true"}
    )
    workspace = Workspace(settings, FrozenClock(NOW))
    try:
        with running(create_app(workspace)) as base_url, httpx.Client(base_url=base_url) as http:
            answer = http.post("/webhooks/mailgun", json=mailgun(mailgun_failed()))
        assert answer.status_code == 503
        assert "MAILER_WEBHOOKS__MAILGUN__SIGNING_KEY" in answer.json()["error"]
    finally:
        workspace.close()


def test_a_webhook_secret_may_not_be_written_in_settings(project: Path) -> None:
    settings = project / "settings.toml"
    settings.write_text(settings.read_text() + '\n[webhooks.mailgun]\nsigning_key = "k"\n')
    with pytest.raises(Exception, match="MAILER_WEBHOOKS__MAILGUN__SIGNING_KEY"):
        load_settings(settings, environ={})
