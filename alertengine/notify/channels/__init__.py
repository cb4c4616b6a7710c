"""Notification channels: per-tenant settings now; the Telegram, Twilio, Slack and webhook senders
arrive with the alerting stage."""
