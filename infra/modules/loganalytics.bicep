// Where delivery_fn's log_analytics route writes (README "Where alerts go"): custom tables in a Log
// Analytics workspace (Microsoft Sentinel's, brought, or one created here), a data collection endpoint
// and rule for the Logs Ingestion API, and the app identity's "Monitoring Metrics Publisher" role on
// that rule only. The app sends with its managed identity; nothing here is a key.

@description('Azure region of the endpoint and rule (the workspace may be elsewhere).')
param location string

@description('Log Analytics workspace in this resource group that receives the tables (Sentinel\'s, to bring one).')
param workspaceName string

@description('Create the workspace (true) or use an existing one of that name (false).')
param createWorkspace bool = false

@description('Days a created workspace keeps data.')
@minValue(30)
@maxValue(730)
param retentionInDays int = 90

@description('Also provision StormwatchEvents_CL and its stream, for normalized events.')
param includeEvents bool = false

@description('Data collection endpoint name.')
param endpointName string

@description('Data collection rule name.')
param ruleName string

@description('Principal id of the function app identity (gets Monitoring Metrics Publisher on the rule).')
param principalId string

@description('Tags for the resources.')
param tags object = {}

// Built-in role: Monitoring Metrics Publisher (what the Logs Ingestion API requires on the rule).
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'
var alertsTable = 'StormwatchAlerts_CL'
var eventsTable = 'StormwatchEvents_CL'

// One row per alert and route (shared/delivery/destinations.py `log_row`).
var alertColumns = [
  { name: 'TimeGenerated', type: 'datetime' }
  { name: 'AlertTime', type: 'datetime' }
  { name: 'AlertId', type: 'string' }
  { name: 'RuleId', type: 'string' }
  { name: 'Title', type: 'string' }
  { name: 'Severity', type: 'string' }
  { name: 'Summary', type: 'string' }
  { name: 'EventCount', type: 'int' }
  { name: 'FirstSeen', type: 'datetime' }
  { name: 'LastSeen', type: 'datetime' }
  { name: 'GroupValues', type: 'dynamic' }
  { name: 'EventIds', type: 'dynamic' }
  { name: 'Tags', type: 'dynamic' }
  { name: 'Context', type: 'dynamic' }
  { name: 'Route', type: 'string' }
]
// Normalized events (shared/normalized_event.py), the fields analysts filter on plus the whole event.
var eventColumns = [
  { name: 'TimeGenerated', type: 'datetime' }
  { name: 'EventId', type: 'string' }
  { name: 'Source', type: 'string' }
  { name: 'Category', type: 'string' }
  { name: 'Operation', type: 'string' }
  { name: 'Action', type: 'string' }
  { name: 'Result', type: 'string' }
  { name: 'CommonEvent', type: 'string' }
  { name: 'Actor', type: 'string' }
  { name: 'SourceIp', type: 'string' }
  { name: 'ResourceId', type: 'string' }
  { name: 'SubscriptionId', type: 'string' }
  { name: 'Event', type: 'dynamic' }
]
var alertStreams = {
  'Custom-${alertsTable}': { columns: alertColumns }
}
var eventStreams = includeEvents ? {
  'Custom-${eventsTable}': { columns: eventColumns }
} : {}
var alertFlow = [
  {
    streams: [ 'Custom-${alertsTable}' ]
    destinations: [ 'workspace' ]
    transformKql: 'source'
    outputStream: 'Custom-${alertsTable}'
  }
]
var eventFlow = includeEvents ? [
  {
    streams: [ 'Custom-${eventsTable}' ]
    destinations: [ 'workspace' ]
    transformKql: 'source'
    outputStream: 'Custom-${eventsTable}'
  }
] : []

resource createdWorkspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = if (createWorkspace) {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      disableLocalAuth: true
    }
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource alerts 'Microsoft.OperationalInsights/workspaces/tables@2022-10-01' = {
  parent: workspace
  name: alertsTable
  properties: {
    plan: 'Analytics'
    schema: {
      name: alertsTable
      columns: alertColumns
    }
  }
  dependsOn: [
    createdWorkspace
  ]
}

resource events 'Microsoft.OperationalInsights/workspaces/tables@2022-10-01' = if (includeEvents) {
  parent: workspace
  name: eventsTable
  properties: {
    plan: 'Analytics'
    schema: {
      name: eventsTable
      columns: eventColumns
    }
  }
  dependsOn: [
    createdWorkspace
  ]
}

resource endpoint 'Microsoft.Insights/dataCollectionEndpoints@2023-03-11' = {
  name: endpointName
  location: location
  tags: tags
  properties: {
    networkAcls: {
      publicNetworkAccess: 'Enabled'
    }
  }
}

resource rule 'Microsoft.Insights/dataCollectionRules@2023-03-11' = {
  name: ruleName
  location: location
  tags: tags
  properties: {
    dataCollectionEndpointId: endpoint.id
    streamDeclarations: union(alertStreams, eventStreams)
    destinations: {
      logAnalytics: [
        {
          name: 'workspace'
          workspaceResourceId: workspace.id
        }
      ]
    }
    dataFlows: concat(alertFlow, eventFlow)
  }
  dependsOn: [
    alerts
    events
  ]
}

resource publisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(rule.id, principalId, monitoringMetricsPublisherRoleId)
  scope: rule
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// What the app settings STORMWATCH_LOGS_ENDPOINT and STORMWATCH_LOGS_RULE_ID carry (rules/routes.yaml).
output ingestionEndpoint string = endpoint.properties.logsIngestion.endpoint
output ruleImmutableId string = rule.properties.immutableId
output workspaceId string = workspace.id
