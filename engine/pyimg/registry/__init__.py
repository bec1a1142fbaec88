"""The distribution-spec client: references, auth, transport, pull and push with retries."""
