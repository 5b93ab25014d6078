// Stormwatch: everything that lives in one resource group.
//
//   az deployment group create -g RG -f infra/main.bicep -p @infra/main.parameters.json
//
// Then subscription.bicep (Activity Log -> raw hub, Reader for enrich_fn) and, optionally,
// tenant.bicep (Entra ID sign-in and audit logs -> raw hub). See infra/README.md.

targetScope = 'resourceGroup'

@description('Azure region for every resource (must offer Flex Consumption).')
param location string = resourceGroup().location

@description('Short prefix for resource names (lowercase letters and digits, 3-11 characters).')
@minLength(3)
@maxLength(11)
param namePrefix string = 'stormwatch'

@description('Tags applied to every resource.')
param tags object = {}

@description('Hub the diagnostic settings deliver to.')
param rawHubName string = 'raw'

@description('Hub normalize_fn publishes normalized events to.')
param normalizedHubName string = 'normalized'

@description('Hub detect_fn publishes alerts to.')
param alertsHubName string = 'alerts'

@description('Consumer group of normalize_fn on the raw hub.')
param normalizeConsumerGroup string = 'normalize'

@description('Consumer group of detect_fn on the normalized hub.')
param detectConsumerGroup string = 'detect'

@description('Partitions of the raw hub (cannot be changed later on the Standard tier).')
@minValue(1)
@maxValue(32)
param rawPartitionCount int = 4

@description('Partitions of the normalized and alerts hubs (cannot be changed later on the Standard tier).')
@minValue(1)
@maxValue(32)
param fanoutPartitionCount int = 4

@description('Days each hub retains events (1-7 on the Standard tier). A partition whose function is stalled by a storage outage must catch up within this time, so the maximum is the default.')
@minValue(1)
@maxValue(7)
param messageRetentionInDays int = 7

@description('Throughput units per Event Hubs namespace (1 TU = 1 MB/s or 1000 events/s in).')
@minValue(1)
@maxValue(40)
param eventHubsCapacity int = 1

@description('Let the namespaces add throughput units under load.')
param eventHubsAutoInflate bool = true

@description('Upper bound of throughput units when auto-inflate is on.')
@minValue(1)
@maxValue(40)
param eventHubsMaximumThroughputUnits int = 4

@description('Maximum instances of the function app.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Spread function app instances over availability zones (only in some regions; keeps at least two billed always-ready instances per function).')
param zoneRedundant bool = false

@description('Memory per function app instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Storage replication.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSku string = 'Standard_LRS'

@description('Days Log Analytics keeps data.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

@description('Log Analytics workspace in this resource group that receives alerts (StormwatchAlerts_CL), e.g. Microsoft Sentinel\'s; empty: the app\'s own workspace.')
param alertsWorkspaceName string = ''

@description('Create alertsWorkspaceName instead of using an existing workspace of that name.')
param createAlertsWorkspace bool = false

@description('Also keep normalized events in Log Analytics: the StormwatchEvents_CL table and stream, and delivery_fn\'s events_export on its own consumer group.')
param keepEventsInLogAnalytics bool = false

@description('Region whose Azure service tags enrich_fn uses to recognise Azure-owned IP addresses.')
param serviceTagsRegion string = location

@description('Let enrich_fn dismiss Defender alerts (also deploy subscription.bicep with grantSecurityAdmin=true).')
param allowAlertDismiss bool = false

@description('Email address the pipeline health and silence alerts notify (empty: none; see README "Health alerts").')
param alertEmail string = ''

@description('HTTPS webhook the health and silence alerts call with the Common Alert Schema (empty: none).')
@secure()
param alertWebhookUrl string = ''

@description('Hours without events from a subscription or tenant that sent events in the last two days before the silence alert fires.')
@minValue(1)
@maxValue(47)
param silenceHours int = 6

@description('How far behind its hub a consumer may fall (ms, for 15 minutes) before the lag alert fires.')
@minValue(1000)
param lagThresholdMs int = 300000

@description('Client id of the Entra ID app registration for analyst sign-in (README "Entra ID sign-in"); empty: the HTTP routes take function keys.')
param authClientId string = ''

@description('Inbound allow-list for the app: IP ranges (CIDR) or service tags; empty (the default): no restriction.')
param allowedInbound array = []

var token = toLower(uniqueString(subscription().id, resourceGroup().id, namePrefix))
var compactPrefix = take(replace(toLower(namePrefix), '-', ''), 9)

var deploymentContainerName = 'app-package'
var deadletterContainerName = 'deadletters'
// Written by catalog_refresh, read by normalize and enrich: the identity's Blob Data Owner on the account
// covers it. ARM's providerOperations list it reads is tenant metadata any signed-in identity may read.
var catalogContainerName = 'catalog'
// A deployment's own rules and lists, laid over the packaged rules/ and read by detect every few minutes
// (README "Writing rules"): upload with `az storage blob upload-batch`, no republish. Read only by the app.
var rulesContainerName = 'rules'
var stateTableName = 'detectionstate'
var alertsTableName = 'alerts'
var enrichCacheTableName = 'enrichcache'
var inventoryTableName = 'inventory'
var deliveriesTableName = 'deliveries'
var eventsConsumerGroupName = 'loganalytics'
var eventsStreamName = 'Custom-StormwatchEvents_CL'

// environment().resourceManager ends with '/'; the app expects a base URL without it.
var armEndpointRaw = environment().resourceManager
var armEndpoint = endsWith(armEndpointRaw, '/') ? substring(armEndpointRaw, 0, length(armEndpointRaw) - 1) : armEndpointRaw

module identity 'modules/identity.bicep' = {
  name: 'stormwatch-identity'
  params: {
    location: location
    name: 'id-${namePrefix}-${token}'
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'stormwatch-monitoring'
  params: {
    location: location
    workspaceName: 'log-${namePrefix}-${token}'
    appInsightsName: 'appi-${namePrefix}-${token}'
    retentionInDays: logRetentionInDays
    principalId: identity.outputs.principalId
    tags: tags
  }
}

module health 'modules/health.bicep' = {
  name: 'stormwatch-health'
  params: {
    location: location
    namePrefix: namePrefix
    appInsightsId: monitoring.outputs.appInsightsId
    alertEmail: alertEmail
    alertWebhookUrl: alertWebhookUrl
    silenceHours: silenceHours
    lagThresholdMs: lagThresholdMs
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'stormwatch-storage'
  params: {
    location: location
    name: 'st${compactPrefix}${token}'
    skuName: storageSku
    deploymentContainerName: deploymentContainerName
    deadletterContainerName: deadletterContainerName
    catalogContainerName: catalogContainerName
    rulesContainerName: rulesContainerName
    tableNames: [
      stateTableName
      alertsTableName
      enrichCacheTableName
      inventoryTableName
      deliveriesTableName
    ]
    principalId: identity.outputs.principalId
    tags: tags
  }
}

module logAnalytics 'modules/loganalytics.bicep' = {
  name: 'stormwatch-loganalytics'
  params: {
    location: location
    workspaceName: empty(alertsWorkspaceName) ? monitoring.outputs.workspaceName : alertsWorkspaceName
    createWorkspace: !empty(alertsWorkspaceName) && createAlertsWorkspace
    retentionInDays: max(logRetentionInDays, 90)
    includeEvents: keepEventsInLogAnalytics
    endpointName: 'dce-${namePrefix}-${token}'
    ruleName: 'dcr-${namePrefix}-${token}'
    principalId: identity.outputs.principalId
    tags: tags
  }
}

module eventHubs 'modules/eventhubs.bicep' = {
  name: 'stormwatch-eventhubs'
  params: {
    location: location
    rawNamespaceName: 'evhns-${namePrefix}-raw-${token}'
    fanoutNamespaceName: 'evhns-${namePrefix}-fan-${token}'
    rawHubName: rawHubName
    normalizedHubName: normalizedHubName
    alertsHubName: alertsHubName
    normalizeConsumerGroup: normalizeConsumerGroup
    detectConsumerGroup: detectConsumerGroup
    eventsConsumerGroup: keepEventsInLogAnalytics ? eventsConsumerGroupName : ''
    rawPartitionCount: rawPartitionCount
    fanoutPartitionCount: fanoutPartitionCount
    messageRetentionInDays: messageRetentionInDays
    capacity: eventHubsCapacity
    autoInflate: eventHubsAutoInflate
    maximumThroughputUnits: eventHubsMaximumThroughputUnits
    principalId: identity.outputs.principalId
    tags: tags
  }
}

// Every name in shared.settings.required_in_azure() must appear here (tests/test_infra.py checks).
// Because these values read the monitoring, storage and eventHubs module outputs, the function app
// is deployed only after those modules, including the identity's role assignments, have finished:
// the host's first start already has its data-plane roles.
// Identity-based connections: `<prefix>__fullyQualifiedNamespace` / `__accountName` name the
// resource, `__credential` + `__clientId` select the user-assigned identity. No value is a secret.
var appSettings = {
  // Functions host storage (checkpoints, leases) through the identity.
  AzureWebJobsStorage__accountName: storage.outputs.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.outputs.clientId
  // Event Hubs trigger connections.
  RawEventHubConnection__fullyQualifiedNamespace: eventHubs.outputs.rawNamespaceFqdn
  RawEventHubConnection__credential: 'managedidentity'
  RawEventHubConnection__clientId: identity.outputs.clientId
  EventHubConnection__fullyQualifiedNamespace: eventHubs.outputs.fanoutNamespaceFqdn
  EventHubConnection__credential: 'managedidentity'
  EventHubConnection__clientId: identity.outputs.clientId
  // azure-identity's DefaultAzureCredential (publisher, tables, blobs, ARM) selects the identity by this.
  AZURE_CLIENT_ID: identity.outputs.clientId
  // Telemetry: the connection string only addresses the resource; with DisableLocalAuth on
  // Application Insights, ingestion is accepted only with the identity's Entra token.
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.outputs.clientId};Authorization=AAD'
  // Stormwatch settings (shared/settings.py).
  STORMWATCH_RAW_HUB: eventHubs.outputs.rawHubName
  STORMWATCH_NORMALIZE_CONSUMER_GROUP: eventHubs.outputs.normalizeConsumerGroup
  STORMWATCH_NORMALIZED_HUB: eventHubs.outputs.normalizedHubName
  STORMWATCH_DETECT_CONSUMER_GROUP: eventHubs.outputs.detectConsumerGroup
  STORMWATCH_ALERTS_HUB: eventHubs.outputs.alertsHubName
  STORMWATCH_PUBLISHER: 'eventhub'
  STORMWATCH_BLOB_ENDPOINT: storage.outputs.blobEndpoint
  STORMWATCH_TABLE_ENDPOINT: storage.outputs.tableEndpoint
  STORMWATCH_DEADLETTER_CONTAINER: deadletterContainerName
  STORMWATCH_RULES_CONTAINER: rulesContainerName
  STORMWATCH_STATE_TABLE: stateTableName
  STORMWATCH_ALERTS_TABLE: alertsTableName
  STORMWATCH_ENRICH_CACHE_TABLE: enrichCacheTableName
  STORMWATCH_INVENTORY_TABLE: inventoryTableName
  STORMWATCH_DELIVERIES_TABLE: deliveriesTableName
  // delivery_fn's log_analytics route (rules/routes.yaml): the Logs Ingestion endpoint and rule.
  STORMWATCH_LOGS_ENDPOINT: logAnalytics.outputs.ingestionEndpoint
  STORMWATCH_LOGS_RULE_ID: logAnalytics.outputs.ruleImmutableId
  // delivery_fn's events_export runs only when the stream is named (keepEventsInLogAnalytics).
  STORMWATCH_EVENTS_STREAM: keepEventsInLogAnalytics ? eventsStreamName : ''
  STORMWATCH_EVENTS_CONSUMER_GROUP: eventsConsumerGroupName
  STORMWATCH_ARM_ENDPOINT: armEndpoint
  STORMWATCH_SUBSCRIPTION_ID: subscription().subscriptionId
  STORMWATCH_SERVICE_TAGS_REGION: serviceTagsRegion
  STORMWATCH_ALLOW_ALERT_DISMISS: allowAlertDismiss ? 'true' : 'false'
  // entra: the routes trust only App Service Authentication's caller and check its app roles; keys: function keys.
  STORMWATCH_HTTP_AUTH: empty(authClientId) ? 'keys' : 'entra'
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'stormwatch-functionapp'
  params: {
    location: location
    planName: 'plan-${namePrefix}-${token}'
    appName: 'func-${namePrefix}-${token}'
    identityId: identity.outputs.id
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    zoneRedundant: zoneRedundant
    appSettings: appSettings
    authClientId: authClientId
    allowedInbound: allowedInbound
    tags: tags
  }
}

output functionAppName string = functionApp.outputs.name
output functionAppHostName string = functionApp.outputs.defaultHostName
output identityPrincipalId string = identity.outputs.principalId
output identityClientId string = identity.outputs.clientId
output storageAccountName string = storage.outputs.name
output rawNamespaceName string = eventHubs.outputs.rawNamespaceName
output fanoutNamespaceName string = eventHubs.outputs.fanoutNamespaceName
output rawHubName string = eventHubs.outputs.rawHubName
output normalizedHubName string = eventHubs.outputs.normalizedHubName
output alertsHubName string = eventHubs.outputs.alertsHubName
// Send-only SAS rule on the raw namespace, for subscription.bicep and tenant.bicep.
output diagnosticsSendRuleId string = eventHubs.outputs.diagnosticsSendRuleId
// Where alerts land for Sentinel (README "Where alerts go").
output alertsWorkspaceId string = logAnalytics.outputs.workspaceId
