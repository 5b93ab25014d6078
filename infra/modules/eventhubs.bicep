// Two Event Hubs namespaces:
//
// * raw:    receives Activity Log and Entra ID logs from diagnostic settings. Azure Monitor
//           diagnostic settings can only deliver to Event Hubs with a SAS authorization rule
//           (eventHubAuthorizationRuleId); they have no managed-identity option. Local (SAS)
//           authentication must therefore stay ON here. The only rule is `diagnostics-send`,
//           with Send rights alone; the functions still read with their managed identity.
// * fan-out: the `normalized` and `alerts` hubs written and read by the functions only, so local
//           authentication is OFF (disableLocalAuth): no SAS key can be used at all.
//
// Role assignments are scoped to single hubs (the narrowest scope Event Hubs RBAC supports).

@description('Azure region.')
param location string

@description('Raw namespace name.')
param rawNamespaceName string

@description('Fan-out namespace name.')
param fanoutNamespaceName string

@description('Hub that diagnostic settings write to.')
param rawHubName string

@description('Hub of normalized events.')
param normalizedHubName string

@description('Hub of alerts.')
param alertsHubName string

@description('Consumer group normalize_fn reads the raw hub with.')
param normalizeConsumerGroup string

@description('Consumer group detect_fn reads the normalized hub with.')
param detectConsumerGroup string

@description('Consumer group delivery_fn\'s events_export reads the normalized hub with (empty: none, events are not exported).')
param eventsConsumerGroup string = ''

@description('Partitions of the raw hub.')
@minValue(1)
@maxValue(32)
param rawPartitionCount int

@description('Partitions of the normalized and alerts hubs.')
@minValue(1)
@maxValue(32)
param fanoutPartitionCount int

@description('Days events are kept in every hub (Standard tier: 1-7).')
@minValue(1)
@maxValue(7)
param messageRetentionInDays int

@description('Throughput units per namespace.')
@minValue(1)
@maxValue(40)
param capacity int

@description('Let each namespace add throughput units under load, up to maximumThroughputUnits.')
param autoInflate bool

@description('Upper bound for auto-inflate.')
@minValue(1)
@maxValue(40)
param maximumThroughputUnits int

@description('Principal id of the function app identity.')
param principalId string

@description('Tags for the resources.')
param tags object = {}

// Built-in roles (data plane).
var eventHubsDataReceiverRoleId = 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'
var eventHubsDataSenderRoleId = '2b629674-e913-4c01-ae53-ef4638d8f975'

resource rawNamespace 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: rawNamespaceName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
    capacity: capacity
  }
  properties: {
    // Must stay false: diagnostic settings authenticate with the SAS rule below (see file header).
    disableLocalAuth: false
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    isAutoInflateEnabled: autoInflate
    maximumThroughputUnits: autoInflate ? maximumThroughputUnits : 0
    kafkaEnabled: false
  }
}

resource rawHub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: rawNamespace
  name: rawHubName
  properties: {
    partitionCount: rawPartitionCount
    messageRetentionInDays: messageRetentionInDays
  }
}

resource normalizeGroup 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = {
  parent: rawHub
  name: normalizeConsumerGroup
}

// Namespace-level rule (diagnostic settings accept only namespace rules) with Send and nothing else.
resource diagnosticsSendRule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' = {
  parent: rawNamespace
  name: 'diagnostics-send'
  properties: {
    rights: [
      'Send'
    ]
  }
}

resource fanoutNamespace 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: fanoutNamespaceName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
    capacity: capacity
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    isAutoInflateEnabled: autoInflate
    maximumThroughputUnits: autoInflate ? maximumThroughputUnits : 0
    kafkaEnabled: false
  }
}

resource normalizedHub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: fanoutNamespace
  name: normalizedHubName
  properties: {
    partitionCount: fanoutPartitionCount
    messageRetentionInDays: messageRetentionInDays
  }
}

resource detectGroup 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = {
  parent: normalizedHub
  name: detectConsumerGroup
}

// The identity's Data Receiver role on the normalized hub covers this group too.
resource eventsGroup 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = if (!empty(eventsConsumerGroup)) {
  parent: normalizedHub
  name: eventsConsumerGroup
}

resource alertsHub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: fanoutNamespace
  name: alertsHubName
  properties: {
    partitionCount: fanoutPartitionCount
    messageRetentionInDays: messageRetentionInDays
  }
}

// normalize_fn reads the raw hub.
resource rawReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(rawHub.id, principalId, eventHubsDataReceiverRoleId)
  scope: rawHub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataReceiverRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// normalize_fn publishes normalized events.
resource normalizedSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(normalizedHub.id, principalId, eventHubsDataSenderRoleId)
  scope: normalizedHub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataSenderRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// detect_fn reads normalized events.
resource normalizedReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(normalizedHub.id, principalId, eventHubsDataReceiverRoleId)
  scope: normalizedHub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataReceiverRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// detect_fn publishes alerts.
resource alertsSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(alertsHub.id, principalId, eventHubsDataSenderRoleId)
  scope: alertsHub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataSenderRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Host name from the namespace's own endpoint (https://<name>.servicebus.windows.net:443/), so
// sovereign clouds get their suffix without a lookup table.
output rawNamespaceName string = rawNamespace.name
output rawNamespaceFqdn string = split(split(rawNamespace.properties.serviceBusEndpoint, '//')[1], ':')[0]
output fanoutNamespaceName string = fanoutNamespace.name
output fanoutNamespaceFqdn string = split(split(fanoutNamespace.properties.serviceBusEndpoint, '//')[1], ':')[0]
output rawHubName string = rawHub.name
output normalizedHubName string = normalizedHub.name
output alertsHubName string = alertsHub.name
output normalizeConsumerGroup string = normalizeGroup.name
output detectConsumerGroup string = detectGroup.name
output diagnosticsSendRuleId string = diagnosticsSendRule.id
