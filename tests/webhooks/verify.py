"""Verify webhook deliveries with the reference Standard Webhooks library (PyPI
`standardwebhooks`), independently of the registrar's own signing code.

usage: verify.py SECRET DELIVERIES.json
DELIVERIES.json: [{"headers": {"webhook-id": ..., "webhook-timestamp": ...,
"webhook-signature": ...}, "body": "..."}, ...]
Prints one line per delivery, "OK <webhook-id> <type>" or "REJECTED <webhook-id> <reason>",
then "[standardwebhooks] PASS" if every delivery verified.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

secret, path = sys.argv[1], sys.argv[2]
with open(path) as f:
    deliveries = json.load(f)
hook = Webhook(secret)
ok = True
for d in deliveries:
    msg_id = d["headers"].get("webhook-id", "?")
    try:
        payload = hook.verify(d["body"], d["headers"])
        print("OK", msg_id, payload["type"])
    except WebhookVerificationError as e:
        ok = False
        print("REJECTED", msg_id, e)
if ok:
    print("[standardwebhooks] PASS")
