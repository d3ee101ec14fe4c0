"""Notifications: an outbox of messages written in the transaction that caused them, and the
built-in mailer that delivers them after commit.

The outbox (table `outbox`) is the interface: any mailer may read the rows whose `sent_at` is
null, deliver them and mark them sent. The built-in one (`deliver_pending`) runs after an
invitation's commit and from `token-service notifications send`; it speaks SMTP
(`TOKEN_SERVICE_SMTP_URL`, smtplib from the standard library), or prints the message for
development (`console`), or leaves the rows to an external mailer (unset).
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import sys
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from flask import current_app
from sqlalchemy import select

from .extensions import db
from .models import OutboxMessage, utcnow

log = logging.getLogger(__name__)

SMTP_TIMEOUT = 10
MAX_ATTEMPTS = 10


def enqueue(kind: str, recipient: str, subject: str, body: str) -> OutboxMessage:
    """Add a message to the outbox in the current transaction (delivered after commit)."""
    message = OutboxMessage(kind=kind, recipient=recipient, subject=subject, body=body)
    db.session.add(message)
    return message


def invitation_to_activate(
    recipient: str, company: str, inviter: str | None, link: str, until: str
) -> OutboxMessage:
    """A new address's invitation: the link sets the password of the account it creates."""
    return enqueue(
        "invitation",
        recipient,
        f"You are invited to {company}",
        f"{inviter or 'A colleague'} invited you to {company}.\n\n"
        f"Set your password to activate your account (the link works once, until {until}):\n"
        f"{link}\n",
    )


def invitation_to_join(
    recipient: str, company: str, inviter: str | None, link: str, until: str
) -> OutboxMessage:
    """An existing customer's invitation: they sign in on the linked page, then join the
    company or decline. Nothing changes for them before they choose."""
    return enqueue(
        "invitation_join",
        recipient,
        f"You are invited to {company}",
        f"{inviter or 'A colleague'} invited you to join {company}.\n\n"
        f"Sign in with your account to join it or decline (the link works once, until "
        f"{until}). Until you join, {company} sees nothing of your account:\n{link}\n",
    )


def _smtp(url: str):
    parts = urlsplit(url)
    if parts.scheme == "smtps":
        server = smtplib.SMTP_SSL(parts.hostname, parts.port or 465, timeout=SMTP_TIMEOUT)
    else:
        server = smtplib.SMTP(parts.hostname, parts.port or 25, timeout=SMTP_TIMEOUT)
        if parts.scheme == "smtp+starttls":
            server.starttls()
    if parts.username:
        server.login(unquote(parts.username), unquote(parts.password or ""))
    return server


def _email(settings, message: OutboxMessage) -> EmailMessage:
    email = EmailMessage()
    email["From"] = settings.mail_from
    email["To"] = message.recipient
    email["Subject"] = message.subject
    email.set_content(message.body)
    return email


def deliver_pending(limit: int = 100) -> int:
    """Deliver up to `limit` pending messages and commit; returns how many went out. A failed
    message stays pending (its error noted) for the next run; nothing is raised."""
    settings = current_app.config["SETTINGS"]
    if settings.smtp_url is None:
        return 0  # an external mailer reads the outbox
    pending = list(
        db.session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.sent_at.is_(None), OutboxMessage.attempts < MAX_ATTEMPTS)
            .order_by(OutboxMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True)  # two mailers never send one message twice
        )
    )
    if not pending:
        db.session.rollback()
        return 0
    sent = 0
    server = None
    try:
        for message in pending:
            message.attempts += 1
            try:
                if settings.smtp_url == "console":
                    # Development only: the link is a credential, printed, never logged.
                    print(
                        f"--- mail to {message.recipient}: {message.subject}\n{message.body}",
                        file=sys.stderr,
                        flush=True,
                    )
                else:
                    server = server or _smtp(settings.smtp_url)
                    server.send_message(_email(settings, message))
            except (OSError, smtplib.SMTPException) as exc:
                message.last_error = exc.__class__.__name__
                log.warning("outbox message %s not delivered: %s", message.id, message.last_error)
                server = None
                continue
            message.sent_at = utcnow()
            message.last_error = None
            message.body = ""  # the activation link is a credential: not kept once delivered
            sent += 1
    finally:
        if server is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                server.quit()
        db.session.commit()
    return sent
