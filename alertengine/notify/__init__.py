"""Notify: who hears what, where, and the record of what did and did not leave.

Owns:
  ``people``        people (time zone, addresses per channel, channel order, own quiet hours) and teams
  ``matchers``      label matchers with Alertmanager's meaning (regexes on RE2)
  ``timeintervals`` recurring windows in a time zone (quiet hours, maintenance windows)
  ``routes``        the tenant's routing document: rules, inhibition, defaults; its version
  ``router``        one routing decision: rules matched, recipients, silenced / inhibited /
                    rate limited / held, and why (live routing and the dry run alike)
  ``silences``      silences and maintenance windows
  ``grouping``      Alertmanager-style groups: group_wait, group_interval, repeat_interval
  ``outbox``        the durable outbox: one stored delivery per recipient, dead letters
  ``sender``        the background sender: backoff, Retry-After, failover, order, DEGRADED
  ``deliveries``    providers' delivery reports (Twilio status callbacks), WhatsApp sessions;
                    an unreached person moves to their next channel, an unanswered call hastens the chain
  ``replies``       incidents' reply codes and the commands people type (ACK K7QM)
  ``chains`` ``escalation`` ``schedules``  escalation chains and their steps; on-call schedules
  ``gateway``       the one egress point: routes and stores every notification, enforces shadow
                    mode, keeps the operator's log channels (console, JSON lines)
  ``channels/``     per-tenant channel settings, one module per channel (telegram, slack, twilio with
                    whatsapp and voice, webhook, file), the words they share (text), the outbox's senders
  ``shadow_report`` the governance report of what shadow mode held back
May import: ``tenancy``, ``store``, ``ledger``, ``net``, ``schema``, ``errors``; never
``incidents``, ``diagnosis``, ``recovery`` or anything above (it reads the incidents table's
labels and open state through SQL, which the store owns).
"""
