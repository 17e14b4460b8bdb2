from sms_gateway.config.model import (
    Config,
    Credentials,
    EngineConfig,
    MediaPolicy,
    ProviderConfig,
    ProxyConfig,
    TenantConfig,
    normalise_number,
)

__all__ = [
    "Config",
    "Credentials",
    "EngineConfig",
    "MediaPolicy",
    "ProviderConfig",
    "ProxyConfig",
    "TenantConfig",
    "normalise_number",
]
