"""The web component: the Starlette application, its declared routes, bots and pages.

Owns: ``app`` (the application factory and lifespan), ``routing`` (declared endpoints: access,
request and reply schemas, the one error shape), ``openapi``, the API modules (``api``,
``incidents``, ``ingest``, ``deploys_api``, ``alerts_api``, ``alert_stream``, ``subscriptions``,
``notify_api``, ``metrics_api`` (GET /metrics)), ``bots`` ``bots_slack`` ``bots_twilio`` (chat and provider webhooks), ``actions`` (approval
pages) and ``templates/``.
May import: every part below it (``runtime``, ``appliance``, ``config`` and the domain packages);
only ``cli`` imports it.
"""
