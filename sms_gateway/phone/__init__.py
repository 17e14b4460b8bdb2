"""`sms-gateway phone`: a phone in the browser to try dialogs against the gateway, with no account or number.

The gateway runs with the configured engines (or the echo engine) and each tenant's provider played by its sandbox;
the page shows one phone per simulated user and, beside it, what the engine received and answered each turn.
"""
