"""Checks of the Bicep templates in infra/: they parse, their parameters fit, the security-relevant
properties hold, every identity has exactly the roles it needs, and the app settings cover what
shared/settings.py says a deployment must provision.

The templates are parsed with pycep (the Bicep parser checkov uses). It lives in the tools virtual
env `.venv-tools` (created by `bash infra/check.sh`), not in the app env, so the parse runs in a
subprocess with that interpreter and hands back JSON. Without `.venv-tools` these tests are skipped.

pycep's JSON writes an identifier (`principalId`) and a string literal (`'Send'`) the same way, as a
plain string; booleans and numbers keep their types, expressions become `function`/`operator` dicts.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.clients.catalog_store import CATALOG_CONTAINER
from tests.conftest import package_script

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "infra"
TOOLS_PYTHON = REPO / ".venv-tools" / "bin" / "python"

if str(REPO) not in sys.path:  # `shared` is imported from the repository root
    sys.path.insert(0, str(REPO))

# Built-in role definition ids, verified against Microsoft's "Azure built-in roles" reference
# (learn.microsoft.com/azure/role-based-access-control/built-in-roles).
BUILT_IN_ROLES: dict[str, str] = {
    "a638d3c7-ab3a-418d-83e6-5f17a39d4fde": "Azure Event Hubs Data Receiver",
    "2b629674-e913-4c01-ae53-ef4638d8f975": "Azure Event Hubs Data Sender",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "acdd72a7-3385-48ef-bd42-f606fba81ae7": "Reader",
    "fb1c8493-542b-48eb-b624-b4c8fea62acd": "Security Admin",
    "749f88d5-cbae-40b8-bcfc-e573ddc772fa": "Monitoring Contributor",
}
# Estate-wide onboarding grants to the policy assignment's own identity, checked by their own test.
ONBOARDING = ("managementgroup.bicep", "modules/policy-listkeys.bicep")

# (template, scope symbol or None for the deployment scope, role): the complete set of grants.
EXPECTED_ROLE_ASSIGNMENTS: set[tuple[str, str | None, str]] = {
    ("modules/eventhubs.bicep", "rawHub", "Azure Event Hubs Data Receiver"),  # normalize_fn reads raw
    ("modules/eventhubs.bicep", "normalizedHub", "Azure Event Hubs Data Sender"),  # normalize_fn writes
    ("modules/eventhubs.bicep", "normalizedHub", "Azure Event Hubs Data Receiver"),  # detect_fn reads
    ("modules/eventhubs.bicep", "alertsHub", "Azure Event Hubs Data Sender"),  # detect_fn writes alerts
    ("modules/storage.bicep", "storage", "Storage Blob Data Owner"),  # host, dead letters, catalog blob
    ("modules/storage.bicep", "storage", "Storage Queue Data Contributor"),
    ("modules/storage.bicep", "storage", "Storage Table Data Contributor"),
    ("modules/monitoring.bicep", "appInsights", "Monitoring Metrics Publisher"),
    ("modules/loganalytics.bicep", "rule", "Monitoring Metrics Publisher"),  # delivery_fn → Logs Ingestion
    ("subscription.bicep", None, "Reader"),  # enrich_fn reads ARM (providerOperations needs no role)
    ("subscription.bicep", None, "Security Admin"),  # opt-in, for alert dismissal
}

ACTIVITY_LOG_CATEGORIES = [
    "Administrative", "Security", "ServiceHealth", "Alert", "Recommendation", "Policy", "Autoscale",
    "ResourceHealth",
]
ENTRA_CATEGORIES = [
    "SignInLogs", "NonInteractiveUserSignInLogs", "ServicePrincipalSignInLogs", "ManagedIdentitySignInLogs",
    "AuditLogs",
]

# Inline checkov suppressions the templates are expected to carry (see infra/README.md). A new one
# must be added here on purpose.
EXPECTED_CHECKOV_SKIPS = {
    "CKV_AZURE_35", "CKV_AZURE_59", "CKV_AZURE_206",  # storage: public endpoint, replication parameter
    "CKV_AZURE_225",  # plan: zone redundancy is a parameter
    "CKV_AZURE_222", "CKV_AZURE_17", "CKV_AZURE_212", "CKV_AZURE_213",  # site: HTTP API, Flex limits
    # the authsettingsV2 resource, which checkov mistakes for a web app
    "CKV_AZURE_13", "CKV_AZURE_63", "CKV_AZURE_65", "CKV_AZURE_66", "CKV_AZURE_80", "CKV_AZURE_88",
}

_PARSE_SCRIPT = """
import json, sys
from pathlib import Path
from pycep import BicepParser

parser = BicepParser()
result = {}
for name in sys.argv[1:]:
    try:
        result[name] = {"template": parser.parse(file_path=Path(name))}
    except Exception as error:  # report every file, not just the first failure
        result[name] = {"error": f"{type(error).__name__}: {error}"}
json.dump(result, sys.stdout, default=str)
"""

Template = dict[str, Any]


@pytest.fixture(scope="module")
def parsed() -> dict[str, dict[str, Any]]:
    """Every .bicep file under infra/, keyed by its path relative to infra/."""
    if not TOOLS_PYTHON.exists():
        pytest.skip(".venv-tools is absent: run `bash infra/check.sh` first (it installs pycep-parser there)")
    files = sorted(path.relative_to(INFRA).as_posix() for path in INFRA.rglob("*.bicep"))
    completed = subprocess.run(
        [str(TOOLS_PYTHON), "-c", _PARSE_SCRIPT, *files],
        cwd=INFRA, capture_output=True, text=True, timeout=240, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, dict[str, Any]] = json.loads(completed.stdout)
    return result


@pytest.fixture(scope="module")
def templates(parsed: dict[str, dict[str, Any]]) -> dict[str, Template]:
    broken = {name: entry["error"] for name, entry in parsed.items() if "error" in entry}
    assert not broken, f"Bicep files pycep cannot parse: {broken}"
    return {name: entry["template"] for name, entry in parsed.items()}


@pytest.fixture(scope="module")
def main(templates: dict[str, Template]) -> Template:
    return templates["main.bicep"]


@pytest.fixture(scope="module")
def app_settings(main: Template) -> dict[str, Any]:
    settings: dict[str, Any] = main["variables"]["appSettings"]["value"]
    return settings


# --- helpers over pycep's JSON -------------------------------------------------------------------


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's or module's own properties, under any `if (...)` or `for ... in ...` wrapper."""
    config: dict[str, Any] = resource["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def resources(template: Template, resource_type: str) -> dict[str, dict[str, Any]]:
    """Symbolic name -> body of every resource of that type (case-insensitive, as ARM is)."""
    return {
        name: body(resource)
        for name, resource in template.get("resources", {}).items()
        if resource["type"].lower() == resource_type.lower()
    }


def accessor(expression: Any) -> str | None:
    """`a.b.c` for a property-accessor chain, else None."""
    if isinstance(expression, str):
        return expression
    if isinstance(expression, dict) and expression.get("operator", {}).get("type") == "property_accessor":
        operands = expression["operator"]["operands"]
        head, tail = accessor(operands["operand_1"]), accessor(operands["operand_2"])
        return f"{head}.{tail}" if head and tail else None
    return None


def variable(template: Template, name: str) -> Any:
    return template["variables"][name]["value"]


def resolve(template: Template, expression: Any) -> Any:
    """A variable's value or a parameter's default when the expression is just that identifier."""
    if isinstance(expression, str):
        if expression in template.get("variables", {}):
            return resolve(template, variable(template, expression))
        if expression in template.get("parameters", {}) and "default" in template["parameters"][expression]:
            return template["parameters"][expression]["default"]
    return expression


def module_arguments(main: Template, symbol: str) -> dict[str, Any]:
    arguments: dict[str, Any] = body(main["modules"][symbol])["params"]
    return arguments


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def decorators(parameter: dict[str, Any]) -> dict[str, Any]:
    return {decorator["type"]: decorator.get("argument") for decorator in parameter.get("decorators", [])}


# --- the templates parse and fit together --------------------------------------------------------


def test_every_bicep_file_parses_with_the_expected_scope(templates: dict[str, Template]) -> None:
    expected = {
        "main.bicep": "resourceGroup", "subscription.bicep": "subscription", "tenant.bicep": "tenant",
        "modules/identity.bicep": "resourceGroup", "modules/monitoring.bicep": "resourceGroup",
        "modules/storage.bicep": "resourceGroup", "modules/eventhubs.bicep": "resourceGroup",
        "modules/functionapp.bicep": "resourceGroup",
        "managementgroup.bicep": "managementGroup", "modules/policy-listkeys.bicep": "resourceGroup",
        "modules/health.bicep": "resourceGroup", "modules/loganalytics.bicep": "resourceGroup",
    }
    assert set(templates) == set(expected)
    scopes = {name: template["globals"]["scope"]["value"] for name, template in templates.items()}
    assert scopes == expected


def test_main_modules_exist_and_get_exactly_their_parameters(
    main: Template, templates: dict[str, Template]
) -> None:
    assert set(main["modules"]) == {"identity", "monitoring", "health", "storage", "eventHubs", "functionApp",
                                    "logAnalytics"}
    for symbol, module in main["modules"].items():
        path = module["detail"]["path"]
        assert path in templates, f"module {symbol}: {path} is not a parsed template"
        declared = templates[path]["parameters"]
        passed = set(module_arguments(main, symbol))
        assert passed <= set(declared), f"module {symbol} passes undeclared {passed - set(declared)}"
        required = {name for name, parameter in declared.items() if "default" not in parameter}
        assert required <= passed, f"module {symbol} misses required {required - passed}"


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "int": (int,), "bool": (bool,), "object": (dict,), "array": (list,),
}


def test_parameters_file_declares_known_parameters_with_compatible_values(main: Template) -> None:
    document = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    assert "deploymentParameters.json" in document["$schema"]
    values = document["parameters"]
    assert values, "main.parameters.json sets no parameter"
    declared = main["parameters"]
    for name, entry in values.items():
        assert name in declared, f"{name} is not a parameter of main.bicep"
        value: Any = entry["value"]
        kind: str = declared[name]["type"]
        allowed_types = _JSON_TYPES[kind]
        assert isinstance(value, allowed_types), f"{name}: {value!r} is not a Bicep {kind}"
        if kind == "int":
            assert not isinstance(value, bool), f"{name}: a bool is not an int"
        rules = decorators(declared[name])
        if "allowed" in rules:
            assert value in rules["allowed"], f"{name}: {value!r} not in {rules['allowed']}"
        if "min_value" in rules:
            assert value >= rules["min_value"], name
        if "max_value" in rules:
            assert value <= rules["max_value"], name
        if "min_length" in rules or "max_length" in rules:
            assert isinstance(value, str | list), name
            assert rules.get("min_length", 0) <= len(value) <= rules.get("max_length", len(value)), name
    without_default = {name for name, parameter in declared.items() if "default" not in parameter}
    assert without_default <= set(values)


def test_main_outputs_what_the_next_steps_need(main: Template) -> None:
    assert {
        "functionAppName", "rawNamespaceName", "fanoutNamespaceName", "rawHubName", "normalizedHubName",
        "alertsHubName", "identityPrincipalId", "diagnosticsSendRuleId",
    } <= set(main["outputs"])
    rule_id = main["outputs"]["diagnosticsSendRuleId"]["value"]
    assert accessor(rule_id) == "eventHubs.outputs.diagnosticsSendRuleId"


# --- security-critical properties ----------------------------------------------------------------


def test_storage_account_accepts_only_entra_tls12_https(
    main: Template, templates: dict[str, Template]
) -> None:
    storage_template = templates["modules/storage.bicep"]
    (account,) = resources(storage_template, "Microsoft.Storage/storageAccounts").values()
    properties = account["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["allowBlobPublicAccess"] is False
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["supportsHttpsTrafficOnly"] is True
    assert properties["defaultToOAuthAuthentication"] is True
    containers = resources(storage_template, "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert containers
    assert all(container["properties"]["publicAccess"] == "None" for container in containers.values())


def test_storage_names_match_what_the_code_reads(main: Template, templates: dict[str, Template]) -> None:
    from shared.settings import Settings

    defaults = Settings()
    arguments = module_arguments(main, "storage")
    storage_template = templates["modules/storage.bicep"]
    containers = resources(storage_template, "Microsoft.Storage/storageAccounts/blobServices/containers")
    container_names = {resolve(main, arguments[container["name"]]) for container in containers.values()}
    assert container_names == {"app-package", defaults.deadletter_container, CATALOG_CONTAINER,
                               defaults.rules_container}
    table_loop = storage_template["resources"]["tables"]["config"]
    assert table_loop["loop_type"]["detail"]["array_name"] == "tableNames"
    tables = {resolve(main, name) for name in arguments["tableNames"]}
    assert tables == {defaults.state_table, defaults.alerts_table, defaults.enrich_cache_table,
                      defaults.inventory_table, defaults.deliveries_table}


def test_raw_namespace_keeps_sas_only_for_a_send_rule_and_fanout_is_identity_only(
    templates: dict[str, Template],
) -> None:
    hubs_template = templates["modules/eventhubs.bicep"]
    namespaces = resources(hubs_template, "Microsoft.EventHub/namespaces")
    assert set(namespaces) == {"rawNamespace", "fanoutNamespace"}
    # Diagnostic settings can only deliver with SAS, so the raw namespace must allow local auth.
    assert namespaces["rawNamespace"]["properties"]["disableLocalAuth"] is False
    assert namespaces["fanoutNamespace"]["properties"]["disableLocalAuth"] is True
    for namespace in namespaces.values():
        assert namespace["properties"]["minimumTlsVersion"] == "1.2"
        assert namespace["sku"]["name"] == "Standard"
    rules = resources(hubs_template, "Microsoft.EventHub/namespaces/authorizationRules")
    assert list(rules.values()) == [
        {"parent": "rawNamespace", "name": "diagnostics-send", "properties": {"rights": ["Send"]}}
    ]
    assert not resources(hubs_template, "Microsoft.EventHub/namespaces/eventhubs/authorizationRules")


def test_hubs_and_consumer_groups_sit_where_the_functions_read(
    main: Template, templates: dict[str, Template]
) -> None:
    hubs_template = templates["modules/eventhubs.bicep"]
    hubs = resources(hubs_template, "Microsoft.EventHub/namespaces/eventhubs")
    assert {name: hub["parent"] for name, hub in hubs.items()} == {
        "rawHub": "rawNamespace", "normalizedHub": "fanoutNamespace", "alertsHub": "fanoutNamespace",
    }
    assert hubs["rawHub"]["properties"]["partitionCount"] == "rawPartitionCount"
    for name in ("normalizedHub", "alertsHub"):
        assert hubs[name]["properties"]["partitionCount"] == "fanoutPartitionCount"
    for hub in hubs.values():
        assert hub["properties"]["messageRetentionInDays"] == "messageRetentionInDays"
    groups = resources(hubs_template, "Microsoft.EventHub/namespaces/eventhubs/consumergroups")
    assert {(group["parent"], group["name"]) for group in groups.values()} == {
        ("rawHub", "normalizeConsumerGroup"), ("normalizedHub", "detectConsumerGroup"),
        ("normalizedHub", "eventsConsumerGroup"),  # delivery_fn's events_export, only when events are kept
    }
    assert "condition" in hubs_template["resources"]["eventsGroup"]["config"]
    from shared.settings import Settings

    defaults = Settings()
    arguments = module_arguments(main, "eventHubs")
    assert resolve(main, arguments["rawHubName"]) == defaults.raw_hub
    assert resolve(main, arguments["normalizedHubName"]) == defaults.normalized_hub
    assert resolve(main, arguments["alertsHubName"]) == defaults.alerts_hub
    assert resolve(main, arguments["normalizeConsumerGroup"]) == defaults.normalize_consumer_group
    assert resolve(main, arguments["detectConsumerGroup"]) == defaults.detect_consumer_group


def test_monitoring_ingests_only_with_entra_tokens(templates: dict[str, Template]) -> None:
    monitoring = templates["modules/monitoring.bicep"]
    (insights,) = resources(monitoring, "Microsoft.Insights/components").values()
    assert insights["properties"]["DisableLocalAuth"] is True
    assert accessor(insights["properties"]["WorkspaceResourceId"]) == "workspace.id"
    (workspace,) = resources(monitoring, "Microsoft.OperationalInsights/workspaces").values()
    assert workspace["properties"]["features"]["disableLocalAuth"] is True


def test_function_app_is_flex_consumption_python_311_and_hardened(templates: dict[str, Template]) -> None:
    app_template = templates["modules/functionapp.bicep"]
    (plan,) = resources(app_template, "Microsoft.Web/serverfarms").values()
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True
    (site,) = resources(app_template, "Microsoft.Web/sites").values()
    assert "linux" in site["kind"].split(",")
    assert site["identity"]["type"] == "UserAssigned"
    properties = site["properties"]
    assert properties["httpsOnly"] is True
    site_config = properties["siteConfig"]
    assert site_config["ftpsState"] == "Disabled"
    assert site_config["minTlsVersion"] == "1.2"
    assert site_config["scmMinTlsVersion"] == "1.2"
    config = properties["functionAppConfig"]
    # `make package` compiles the mappers for one Python: the app must run that one.
    assert config["runtime"] == {"name": "python", "version": package_script().PYTHON_VERSION}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {
        "type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId",
    }
    assert config["scaleAndConcurrency"] == {
        "maximumInstanceCount": "maximumInstanceCount", "instanceMemoryMB": "instanceMemoryMB",
    }
    # Settings are part of the site: one entry per key of the appSettings object.
    settings_loop = site_config["appSettings"]
    assert settings_loop["loop_type"]["detail"] == {"item_name": "setting", "object_name": "appSettings"}
    assert {key: accessor(value) for key, value in settings_loop["config"].items()} == {
        "name": "setting.key", "value": "setting.value",
    }
    policies = resources(app_template, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert sorted((policy["name"], policy["properties"]["allow"]) for policy in policies.values()) == [
        ("ftp", False), ("scm", False),
    ]
    configs = resources(app_template, "Microsoft.Web/sites/config")
    assert [config["name"] for config in configs.values()] == ["authsettingsV2"], "settings belong in siteConfig"


def test_main_passes_the_settings_object_and_scale_parameters_to_the_app(main: Template) -> None:
    arguments = module_arguments(main, "functionApp")
    assert arguments["appSettings"] == "appSettings"
    assert arguments["maximumInstanceCount"] == "maximumInstanceCount"
    assert arguments["instanceMemoryMB"] == "instanceMemoryMB"
    assert accessor(arguments["deploymentContainerUrl"]) == "storage.outputs.deploymentContainerUrl"


# --- app settings --------------------------------------------------------------------------------


def test_every_setting_the_code_requires_is_provisioned(app_settings: dict[str, Any]) -> None:
    from shared.settings import required_in_azure

    missing = set(required_in_azure()) - set(app_settings)
    assert not missing, f"main.bicep does not provision {sorted(missing)}"


def test_setting_values_are_wired_to_the_right_resources(
    app_settings: dict[str, Any], main: Template, templates: dict[str, Template]
) -> None:
    wiring = {name: accessor(value) for name, value in app_settings.items()}
    assert app_settings["STORMWATCH_PUBLISHER"] == "eventhub"
    assert wiring["STORMWATCH_RAW_HUB"] == "eventHubs.outputs.rawHubName"
    assert wiring["STORMWATCH_NORMALIZED_HUB"] == "eventHubs.outputs.normalizedHubName"
    assert wiring["STORMWATCH_ALERTS_HUB"] == "eventHubs.outputs.alertsHubName"
    assert wiring["STORMWATCH_NORMALIZE_CONSUMER_GROUP"] == "eventHubs.outputs.normalizeConsumerGroup"
    assert wiring["STORMWATCH_DETECT_CONSUMER_GROUP"] == "eventHubs.outputs.detectConsumerGroup"
    assert wiring["RawEventHubConnection__fullyQualifiedNamespace"] == "eventHubs.outputs.rawNamespaceFqdn"
    assert wiring["EventHubConnection__fullyQualifiedNamespace"] == "eventHubs.outputs.fanoutNamespaceFqdn"
    assert wiring["AzureWebJobsStorage__accountName"] == "storage.outputs.name"
    assert wiring["STORMWATCH_BLOB_ENDPOINT"] == "storage.outputs.blobEndpoint"
    assert wiring["STORMWATCH_TABLE_ENDPOINT"] == "storage.outputs.tableEndpoint"
    assert wiring["APPLICATIONINSIGHTS_CONNECTION_STRING"] == "monitoring.outputs.appInsightsConnectionString"
    # Each output comes from the intended resource, not its neighbour.
    hubs_outputs = templates["modules/eventhubs.bicep"]["outputs"]
    assert "'rawNamespace'" in repr(hubs_outputs["rawNamespaceFqdn"]["value"])
    assert "serviceBusEndpoint" in repr(hubs_outputs["rawNamespaceFqdn"]["value"])
    assert "'fanoutNamespace'" in repr(hubs_outputs["fanoutNamespaceFqdn"]["value"])
    storage_outputs = templates["modules/storage.bicep"]["outputs"]
    assert accessor(storage_outputs["tableEndpoint"]["value"]) == "storage.properties.primaryEndpoints.table"
    assert accessor(storage_outputs["blobEndpoint"]["value"]) == "storage.properties.primaryEndpoints.blob"
    # Subscription and cloud come from the deployment, the ARM URL without its trailing slash.
    assert app_settings["STORMWATCH_SUBSCRIPTION_ID"]["function"] == {
        "type": "subscription", "parameters": {"subscription_id": None}, "property_name": "subscriptionId",
    }
    assert app_settings["STORMWATCH_ARM_ENDPOINT"] == "armEndpoint"
    assert variable(main, "armEndpointRaw") == {
        "function": {"type": "environment", "property_name": "resourceManager"},
    }
    trim = variable(main, "armEndpoint")["operator"]
    assert trim["type"] == "conditional"
    assert trim["operands"]["condition"]["function"]["type"] == "ends_with"
    assert trim["operands"]["condition"]["function"]["parameters"]["string_to_find"] == "/"


def test_identity_based_connections_name_the_user_assigned_identity(app_settings: dict[str, Any]) -> None:
    client_id = "identity.outputs.clientId"
    for prefix in ("AzureWebJobsStorage", "RawEventHubConnection", "EventHubConnection"):
        assert app_settings[f"{prefix}__credential"] == "managedidentity"
        assert accessor(app_settings[f"{prefix}__clientId"]) == client_id
        assert prefix not in app_settings, f"{prefix} alone would be read as a connection string"
    assert accessor(app_settings["AZURE_CLIENT_ID"]) == client_id
    assert app_settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "ClientId=${identity.outputs.clientId};Authorization=AAD"
    )


def test_literal_settings_are_valid_for_the_app(app_settings: dict[str, Any], main: Template) -> None:
    from shared.settings import Settings, declared_env_names

    literal = {name: value for name, value in app_settings.items() if isinstance(value, str)}
    env = {name: value for name, value in literal.items() if "${" not in value}
    env = {name: str(resolve(main, value)) for name, value in env.items() if name in declared_env_names()}
    dismiss = app_settings["STORMWATCH_ALLOW_ALERT_DISMISS"]["operator"]["operands"]
    env["STORMWATCH_ALLOW_ALERT_DISMISS"] = dismiss["false_value"]
    settings = Settings.from_env(env)
    assert settings.publisher == "eventhub"
    assert settings.allow_alert_dismiss is False
    assert Settings.from_env({"STORMWATCH_ALLOW_ALERT_DISMISS": dismiss["true_value"]}).allow_alert_dismiss


_SECRET_NAME = re.compile(r"key|secret|password|passwd|sas|token|credential_?string|connection_?string", re.I)
_SECRET_VALUE = re.compile(
    r"AccountKey=|SharedAccessKey|SharedAccessSignature|listKeys|listConnectionStrings|primaryKey|"
    r"secondaryKey|connectionString|InstrumentationKey=", re.I,
)


def test_no_app_setting_carries_a_secret(
    app_settings: dict[str, Any], templates: dict[str, Template]
) -> None:
    # APPLICATIONINSIGHTS_CONNECTION_STRING is the one allowed exception: it holds the instrumentation
    # key and ingestion endpoint, which only *address* the resource. Application Insights has local
    # auth disabled (checked here and in test_monitoring_ingests_only_with_entra_tokens), so ingestion
    # needs the identity's Entra token (APPLICATIONINSIGHTS_AUTHENTICATION_STRING); the key alone
    # cannot write anything.
    exception = "APPLICATIONINSIGHTS_CONNECTION_STRING"
    assert accessor(app_settings[exception]) == "monitoring.outputs.appInsightsConnectionString"
    (insights,) = resources(templates["modules/monitoring.bicep"], "Microsoft.Insights/components").values()
    assert insights["properties"]["DisableLocalAuth"] is True
    for name, value in app_settings.items():
        if name == exception:
            continue
        assert not _SECRET_NAME.search(name), f"app setting {name} looks like a secret"
        assert not _SECRET_VALUE.search(json.dumps(value)), f"app setting {name}={value!r} looks secret"


def test_no_template_reads_keys_or_connection_strings(templates: dict[str, Template]) -> None:
    for name, template in templates.items():
        for node in walk(template):
            if isinstance(node, dict) and isinstance(node.get("function"), dict):
                function_type = str(node["function"].get("type", ""))
                assert not function_type.lower().startswith("list"), f"{name} calls {function_type}"
            if isinstance(node, str):
                assert not re.search(r"\blist(Keys|ConnectionStrings|Secrets)\b", node), f"{name}: {node}"


# --- role assignments ----------------------------------------------------------------------------


def role_assignments(
    templates: dict[str, Template],
) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """The app identity's grants (`principalId` parameter, built-in roles); onboarding's are apart."""
    for file_name, template in templates.items():
        for symbol, resource in template.get("resources", {}).items():
            if resource["type"] == "Microsoft.Authorization/roleAssignments" and file_name not in ONBOARDING:
                yield file_name, symbol, resource, body(resource)


def test_role_assignments_are_exactly_the_needed_built_in_roles_at_the_narrowest_scope(
    templates: dict[str, Template],
) -> None:
    found: set[tuple[str, str | None, str]] = set()
    for file_name, symbol, _, assignment in role_assignments(templates):
        template = templates[file_name]
        definition = assignment["properties"]["roleDefinitionId"]["function"]
        assert definition["type"] == "subscription_resource_id", symbol
        assert definition["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
        role_variable = definition["parameters"]["resource_name_1"]
        role_id = variable(template, role_variable)
        assert role_id in BUILT_IN_ROLES, f"{file_name}:{symbol} uses unknown role id {role_id}"
        assert assignment["properties"]["principalId"] == "principalId"
        assert assignment["properties"]["principalType"] == "ServicePrincipal"
        scope = assignment.get("scope")
        # Deterministic name: guid(scope id, principal, role).
        name = assignment["name"]["function"]
        assert name["type"] == "guid"
        arguments = name["parameters"]
        if scope:
            assert accessor(arguments["base_string"]) == f"{scope}.id"
        else:  # subscription().id
            assert arguments["base_string"]["function"]["type"] == "subscription"
        assert [arguments["extra_string_1"], arguments["extra_string_2"]] == ["principalId", role_variable]
        found.add((file_name, scope, BUILT_IN_ROLES[role_id]))
    assert found == EXPECTED_ROLE_ASSIGNMENTS


def test_event_hub_roles_are_scoped_to_single_hubs(templates: dict[str, Template]) -> None:
    hubs_template = templates["modules/eventhubs.bicep"]
    hub_symbols = set(resources(hubs_template, "Microsoft.EventHub/namespaces/eventhubs"))
    scopes = {assignment.get("scope") for file_name, _, _, assignment in role_assignments(templates)
              if file_name == "modules/eventhubs.bicep"}
    assert scopes and scopes <= hub_symbols


def test_security_admin_is_opt_in_and_reader_is_not(templates: dict[str, Template]) -> None:
    subscription = templates["subscription.bicep"]
    parameter = subscription["parameters"]["grantSecurityAdmin"]
    assert parameter["type"] == "bool"
    assert parameter["default"] is False
    assert subscription["resources"]["securityAdmin"]["config"]["condition"] == "grantSecurityAdmin"
    assert "condition" not in subscription["resources"]["reader"]["config"]


# --- log sources ---------------------------------------------------------------------------------


def test_activity_log_streams_all_eight_categories_to_the_raw_hub(
    templates: dict[str, Template], main: Template
) -> None:
    subscription = templates["subscription.bicep"]
    (setting,) = resources(subscription, "Microsoft.Insights/diagnosticSettings").values()
    properties = setting["properties"]
    assert properties["eventHubAuthorizationRuleId"] == "diagnosticsSendRuleId"
    assert properties["eventHubName"] == "rawHubName"
    assert subscription["parameters"]["rawHubName"]["default"] == main["parameters"]["rawHubName"]["default"]
    logs = properties["logs"]
    assert logs["config"] == {"category": "category", "enabled": True}
    assert resolve(subscription, logs["loop_type"]["detail"]["array_name"]) == ACTIVITY_LOG_CATEGORIES


def test_entra_id_sign_in_and_audit_logs_stream_to_the_raw_hub(
    templates: dict[str, Template], main: Template
) -> None:
    tenant = templates["tenant.bicep"]
    (setting,) = resources(tenant, "microsoft.aadiam/diagnosticSettings").values()
    properties = setting["properties"]
    assert properties["eventHubAuthorizationRuleId"] == "diagnosticsSendRuleId"
    assert properties["eventHubName"] == "rawHubName"
    assert tenant["parameters"]["rawHubName"]["default"] == main["parameters"]["rawHubName"]["default"]
    logs = properties["logs"]
    assert logs["config"] == {"category": "category", "enabled": True}
    assert resolve(tenant, logs["loop_type"]["detail"]["array_name"]) == ENTRA_CATEGORIES


# --- checkov suppressions ------------------------------------------------------------------------


def test_checkov_suppressions_are_inline_explained_and_expected() -> None:
    skip = re.compile(r"checkov:skip=([A-Za-z0-9_]+)(?::(.*))?$")
    found: dict[str, str] = {}
    for path in INFRA.rglob("*.bicep"):
        for line in path.read_text(encoding="utf-8").splitlines():
            match = skip.search(line)
            if match:
                assert line.lstrip().startswith("//"), f"{path.name}: suppression outside a comment"
                reason = (match.group(2) or "").strip()
                assert len(reason) >= 20, f"{path.name}: {match.group(1)} has no real reason"
                found[match.group(1)] = reason
    assert set(found) == EXPECTED_CHECKOV_SKIPS
    for folder in (REPO, INFRA):
        for config in (folder / ".checkov.yaml", folder / ".checkov.yml"):
            assert not config.exists(), f"{config} could skip checks globally"


# --- estate-wide onboarding (managementgroup.bicep) ------------------------------------------------


def test_onboarding_policy_deploys_the_activity_log_setting_subscription_bicep_deploys(
        templates: dict[str, Template]) -> None:
    group = templates["managementgroup.bicep"]
    definition = resources(group, "Microsoft.Authorization/policyDefinitions")["definition"]
    loaded = definition["properties"]["function"]
    assert loaded["type"] == "load_json_content"
    policy = json.loads((INFRA / loaded["parameters"]["file_path"]).read_text())
    then = policy["policyRule"]["then"]
    assert policy["policyRule"]["if"] == {"field": "type", "equals": "Microsoft.Resources/subscriptions"}
    assert policy["parameters"]["effect"]["defaultValue"] == "DeployIfNotExists"
    assert then["details"]["roleDefinitionIds"] == [
        "/providers/Microsoft.Authorization/roleDefinitions/749f88d5-cbae-40b8-bcfc-e573ddc772fa"]
    setting = then["details"]["deployment"]["properties"]["template"]["resources"][0]
    assert setting["type"] == "Microsoft.Insights/diagnosticSettings"
    assert [entry["category"] for entry in setting["properties"]["logs"]] == ACTIVITY_LOG_CATEGORIES
    assert all(entry["enabled"] is True for entry in setting["properties"]["logs"])
    conditions = then["details"]["existenceCondition"]["allOf"]
    assert {condition.get("field") for condition in conditions} >= {
        "Microsoft.Insights/diagnosticSettings/eventHubAuthorizationRuleId",
        "Microsoft.Insights/diagnosticSettings/eventHubName"}
    assignment = resources(group, "Microsoft.Authorization/policyAssignments")["assignment"]
    assert assignment["identity"]["type"] == "SystemAssigned"
    assert set(assignment["properties"]["parameters"]) <= set(policy["parameters"])
    remediation = resources(group, "Microsoft.PolicyInsights/remediations")["remediation"]
    assert remediation["properties"]["resourceDiscoveryMode"] == "ExistingNonCompliant"
    assert group["parameters"]["remediateExisting"]["default"] is True


def test_onboarding_grants_only_what_the_policy_and_the_app_need(templates: dict[str, Template]) -> None:
    group = templates["managementgroup.bicep"]
    grants = resources(group, "Microsoft.Authorization/roleAssignments")
    found = {}
    for symbol, grant in grants.items():
        role = grant["properties"]["roleDefinitionId"]["function"]
        assert role["type"] == "tenant_resource_id", symbol  # built-in roles at management-group scope
        found[symbol] = (BUILT_IN_ROLES[variable(group, role["parameters"]["resource_name_1"])],
                         accessor(grant["properties"]["principalId"]))
    assert found == {
        "policyMonitoringContributor": ("Monitoring Contributor", "assignment.identity.principalId"),
        "appReader": ("Reader", "principalId"),
    }
    listkeys = templates["modules/policy-listkeys.bicep"]
    role = resources(listkeys, "Microsoft.Authorization/roleDefinitions")["listKeysRole"]["properties"]
    assert role["permissions"] == [{"actions": [
        "Microsoft.EventHub/namespaces/authorizationRules/read",
        "Microsoft.EventHub/namespaces/authorizationRules/listkeys/action"], "notActions": []}]
    (use,) = resources(listkeys, "Microsoft.Authorization/roleAssignments").values()
    assert use["scope"] == "sendRule"  # the one rule, not the namespace
    assert accessor(use["properties"]["roleDefinitionId"]) == "listKeysRole.id"
    module = body(group["modules"]["policyRuleAccess"])
    assert accessor(module["params"]["principalId"]) == "assignment.identity.principalId"


# --- health and silence alerts (modules/health.bicep) ----------------------------------------------

HEALTH_RULES = {"normalize-lag", "detect-lag", "function-failures", "dead-letter-rate", "detect-retry-loop"}


def test_health_rules_cover_lag_failures_dead_letters_and_retry_loops(templates: dict[str, Template]) -> None:
    health = templates["modules/health.bicep"]
    rules = {rule["name"]: rule for rule in variable(health, "rules")}
    assert set(rules) == HEALTH_RULES
    defaults = {name: parameter.get("default") for name, parameter in health["parameters"].items()}
    assert defaults["lagThresholdMs"] == 300000 and rules["normalize-lag"]["threshold"] == "lagThresholdMs"
    assert rules["normalize-lag"]["window"] == rules["detect-lag"]["window"] == "PT15M"  # behind for 15 minutes
    assert "min(todouble(line.lag_ms))" in rules["detect-lag"]["query"]  # even the freshest batch was late
    assert defaults["deadLetterPercentThreshold"] == 5 and rules["dead-letter-rate"]["window"] == "PT1H"
    assert rules["detect-retry-loop"]["dimensions"] == ["partition"]  # per partition: one stalled is enough
    assert rules["function-failures"]["dimensions"] == ["operation_Name"]
    rule = resources(health, "Microsoft.Insights/scheduledQueryRules")["health"]
    criteria = rule["properties"]["criteria"]["allOf"][0]
    assert [accessor(criteria[name]) for name in ("query", "metricMeasureColumn", "threshold")] == [
        "rule.query", "rule.measure", "rule.threshold"]
    assert [accessor(group) for group in rule["properties"]["actions"]["actionGroups"]] == ["actionGroup.id"]


def test_silence_fires_per_origin_and_stays_until_closed(templates: dict[str, Template]) -> None:
    health = templates["modules/health.bicep"]
    silence = resources(health, "Microsoft.Insights/scheduledQueryRules")["silence"]["properties"]
    criteria = silence["criteria"]["allOf"][0]
    assert "bag_keys(line.origins)" in criteria["query"]
    assert criteria["dimensions"][0]["name"] == "origin"
    assert (criteria["operator"], criteria["threshold"]) == ("GreaterThanOrEqual", "silenceHours")
    assert silence["overrideQueryTimeRange"] == "P2D" and silence["autoMitigate"] is False
    assert health["parameters"]["silenceHours"]["default"] == 6


def test_health_alerts_are_deployed_with_their_notification_targets(main: Template) -> None:
    arguments = module_arguments(main, "health")
    assert accessor(arguments["appInsightsId"]) == "monitoring.outputs.appInsightsId"
    assert "secure" in decorators(main["parameters"]["alertWebhookUrl"])  # the URL may hold a token
    for name in ("alertEmail", "alertWebhookUrl", "silenceHours", "lagThresholdMs"):
        assert arguments[name] == name


# --- Entra ID sign-in and network restrictions --------------------------------------------------------


def test_entra_sign_in_guards_every_route_when_a_client_id_is_given(
        templates: dict[str, Template], main: Template, app_settings: dict[str, Any]) -> None:
    app_template = templates["modules/functionapp.bicep"]
    wrapped = app_template["resources"]["authentication"]["config"]
    assert wrapped["condition"] == "entraSignIn"  # on exactly when a client id is passed
    auth = body(app_template["resources"]["authentication"])["properties"]
    assert auth["globalValidation"] == {"requireAuthentication": True,
                                        "unauthenticatedClientAction": "RedirectToLoginPage",
                                        "redirectToProvider": "azureactivedirectory"}
    entra = auth["identityProviders"]["azureActiveDirectory"]
    assert entra["enabled"] is True and entra["registration"]["clientId"] == "authClientId"
    assert "clientSecretSettingName" not in entra["registration"]  # no secret: the browser flow takes ID tokens
    assert auth["httpSettings"]["requireHttps"] is True
    assert module_arguments(main, "functionApp")["authClientId"] == "authClientId"
    assert main["parameters"]["authClientId"]["default"] == ""
    # The app trusts the platform's caller header only in entra mode, which the deployment sets with the client id.
    mode = app_settings["STORMWATCH_HTTP_AUTH"]["operator"]
    assert mode["type"] == "conditional"


def test_network_restriction_is_off_by_default_and_denies_the_rest_when_set(
        templates: dict[str, Template], main: Template) -> None:
    app_template = templates["modules/functionapp.bicep"]
    site = body(app_template["resources"]["app"])["properties"]["siteConfig"]
    assert site["ipSecurityRestrictions"] == "inboundRules"
    assert site["scmIpSecurityRestrictionsUseMain"] is True
    default_action = site["ipSecurityRestrictionsDefaultAction"]["operator"]
    assert default_action["type"] == "conditional"
    assert main["parameters"]["allowedInbound"]["default"] == []
    assert module_arguments(main, "functionApp")["allowedInbound"] == "allowedInbound"


def test_log_analytics_gets_the_alert_tables_a_dcr_and_only_the_publisher_role_on_it(
    main: Template, templates: dict[str, Template], app_settings: dict[str, Any]
) -> None:
    from shared.delivery.destinations import log_row
    from shared.delivery.events import COLUMNS as EVENT_COLUMNS
    from shared.delivery.routes import LogAnalytics
    from tests.delivery.conftest import make_alert

    template = templates["modules/loganalytics.bicep"]
    tables = resources(template, "Microsoft.OperationalInsights/workspaces/tables")
    assert {table["name"] for table in tables.values()} == {"alertsTable", "eventsTable"}
    assert variable(template, "alertsTable") == "StormwatchAlerts_CL"
    assert variable(template, "eventsTable") == "StormwatchEvents_CL"
    assert "condition" in template["resources"]["events"]["config"]  # events only when asked for
    # The rows the app sends have exactly the columns the tables and the streams declare.
    columns = {column["name"] for column in variable(template, "alertColumns")}
    assert columns == set(log_row(make_alert(1), {}, "sentinel"))
    assert {column["name"] for column in variable(template, "eventColumns")} == {"TimeGenerated", "Event",
                                                                                   *EVENT_COLUMNS}
    from shared.settings import Settings, env_name

    assert app_settings[env_name("events_consumer_group")] == "eventsConsumerGroupName"
    assert resolve(main, "eventsConsumerGroupName") == Settings().events_consumer_group
    assert resolve(main, "eventsStreamName") == "Custom-StormwatchEvents_CL"
    assert module_arguments(main, "eventHubs")["eventsConsumerGroup"]["operator"]["type"] == "conditional"
    assert variable(template, "alertStreams") == {"'Custom-${alertsTable}'": {"columns": "alertColumns"}}
    default_stream = LogAnalytics.model_fields["stream"].default
    assert default_stream == "Custom-StormwatchAlerts_CL"
    (endpoint,) = resources(template, "Microsoft.Insights/dataCollectionEndpoints").values()
    assert endpoint["properties"]["networkAcls"]["publicNetworkAccess"] == "Enabled"
    (rule,) = resources(template, "Microsoft.Insights/dataCollectionRules").values()
    assert accessor(rule["properties"]["dataCollectionEndpointId"]) == "endpoint.id"
    assert accessor(rule["properties"]["destinations"]["logAnalytics"][0]["workspaceResourceId"]) == "workspace.id"
    created = body(template["resources"]["createdWorkspace"])  # or the existing one of that name
    assert created["properties"]["features"]["disableLocalAuth"] is True
    # The app reads the endpoint and the rule's immutable id from these settings (rules/routes.yaml).
    wiring = {name: accessor(value) for name, value in app_settings.items()}
    assert wiring["STORMWATCH_LOGS_ENDPOINT"] == "logAnalytics.outputs.ingestionEndpoint"
    assert wiring["STORMWATCH_LOGS_RULE_ID"] == "logAnalytics.outputs.ruleImmutableId"
    assert LogAnalytics.model_fields["endpoint_setting"].default == "STORMWATCH_LOGS_ENDPOINT"
    assert LogAnalytics.model_fields["rule_id_setting"].default == "STORMWATCH_LOGS_RULE_ID"
    outputs = template["outputs"]
    assert accessor(outputs["ingestionEndpoint"]["value"]) == "endpoint.properties.logsIngestion.endpoint"
    assert accessor(outputs["ruleImmutableId"]["value"]) == "rule.properties.immutableId"
    assert accessor(module_arguments(main, "logAnalytics")["principalId"]) == "identity.outputs.principalId"
