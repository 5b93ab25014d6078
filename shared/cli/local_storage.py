"""Which storage account the local commands use, and the guard that keeps them off real accounts.

Every command (replay, serve, deadletters, demo) follows one rule: the configured account when one is
configured, else Azurite's development account on 127.0.0.1. Commands that empty tables (`demo`,
`replay --fresh`) touch only the emulator unless the person running them says `--i-mean-it`.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from shared.cli.usage import UsageError
from shared.clients import wiring
from shared.clients.storage import DEFAULT_PORTS, DEV_ACCOUNT, emulator_connection_string, local_connection_string
from shared.settings import Settings, env_name, get_settings
from shared.values import is_loopback_host

# The flag that lets a destructive local command touch an account that is not the emulator.
I_MEAN_IT = "--i-mean-it"
_STORAGE_FIELDS = ("storage_connection_string", "blob_endpoint", "table_endpoint")


def storage_configured(settings: Settings) -> bool:
    return any(getattr(settings, name) for name in _STORAGE_FIELDS)


def local_settings(settings: Settings, ports: dict[str, int] = DEFAULT_PORTS) -> Settings:
    """The configured storage account, else Azurite's development account on 127.0.0.1 (`ports`)."""
    if storage_configured(settings):
        return settings
    return settings.model_copy(update={"storage_connection_string": emulator_connection_string(ports)})


def default_to_local_storage(ports: dict[str, int] = DEFAULT_PORTS) -> None:
    """`serve`: the functions read their settings from the environment, so the rule above goes there."""
    if not storage_configured(get_settings()):
        os.environ[env_name("storage_connection_string")] = emulator_connection_string(ports)
        wiring.reset()


def is_emulator(settings: Settings) -> bool:
    """True only for Azurite's development account (devstoreaccount1) with every endpoint on loopback.

    Endpoint settings mean a managed identity, so a real account; a connection string without
    explicit blob and table endpoints addresses `<account>.core.windows.net`.
    """
    if settings.blob_endpoint or settings.table_endpoint:
        return False
    connection = local_connection_string(settings)
    if not connection:
        return False
    parts = {key.strip().lower(): value.strip() for key, _, value in
             (item.partition("=") for item in connection.split(";")) if key.strip()}
    endpoints = [value for key, value in parts.items() if key.endswith("endpoint")]
    return (parts.get("accountname") == DEV_ACCOUNT and "blobendpoint" in parts and "tableendpoint" in parts
            and all(is_loopback_host(urlsplit(endpoint).hostname) for endpoint in endpoints))



def refuse_unless_emulator(settings: Settings, i_mean_it: bool, what: str) -> None:
    """Stop `what` (a command that deletes data) before it touches an account that is not the emulator."""
    if i_mean_it or is_emulator(settings):
        return
    raise UsageError(f"{what} would empty tables of a storage account that is not the local emulator "
                     f"({env_name('storage_connection_string')} / {env_name('table_endpoint')} name it); "
                     f"add {I_MEAN_IT} if that is really what you want")
