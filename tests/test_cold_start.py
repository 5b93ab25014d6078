"""Cold start: the host's indexing (`import function_app`) loads bindings, not the engines' SDKs.

Every scale-out on Flex Consumption pays this import; the clients come with the first invocation that
needs them (`bench/scale.py` prints the time against `import azure.functions, orjson`). A fresh
interpreter per check: this test process has imported everything already.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import orjson
import pytest

from shared.clients.wiring import LazyDeadLetterStore
from shared.settings import Settings, SettingsError
from tests.conftest import REPO, indexed_functions

# What indexing must not import: each is only needed once a function runs (and some never are).
DEFERRED = ("azure.storage.blob", "azure.identity", "azure.data.tables", "azure.eventhub", "requests",
            "shared.detect.engine", "shared.normalize.batch", "shared.enrich.service", "shared.inventory.api",
            "shared.delivery.engine")


def loaded_after(code: str) -> dict[str, object]:
    run = subprocess.run([sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
                         cwd=REPO, capture_output=True, check=True, timeout=120)
    return dict.fromkeys(orjson.loads(run.stdout.splitlines()[-1]))


def test_indexing_the_app_imports_no_storage_event_hubs_or_arm_client() -> None:
    loaded = loaded_after("import function_app\nnames = function_app.app.get_functions()")
    assert [name for name in DEFERRED if name in loaded] == []
    assert {"normalize", "catalog_refresh", "detect", "detect_housekeeping", "inventory", "dashboard",
            "enrich_ip", "enrich_openapi", "delivery", "alert_status"} <= set(indexed_functions()), \
        "every function is still indexed"


def test_a_batch_without_dead_letters_never_imports_the_blob_client() -> None:
    loaded = loaded_after(
        "from shared.clients.wiring import LazyDeadLetterStore\n"
        "from shared.settings import Settings\n"
        "LazyDeadLetterStore(Settings(storage_connection_string='UseDevelopmentStorage=true')).write([])")
    assert "shared.clients.wiring" in loaded and "azure.storage.blob" not in loaded


def test_the_dead_letter_store_without_a_blob_setting_fails_at_once_not_at_its_first_letter() -> None:
    with pytest.raises(SettingsError, match="STORMWATCH_BLOB_ENDPOINT"):
        LazyDeadLetterStore(Settings(storage_connection_string=None, blob_endpoint=None))


def test_the_app_keeps_the_azure_sdk_s_per_request_info_lines_out_of_the_worker_s_logs() -> None:
    run = subprocess.run([sys.executable, "-c", "import logging, function_app\n"
                          "print(logging.getLogger('azure.core.pipeline.policies.http_logging_policy')"
                          ".getEffectiveLevel())"], cwd=REPO, capture_output=True, check=True, timeout=120)
    assert int(run.stdout.splitlines()[-1]) == logging.WARNING
