// Subscription-level pieces (run once per monitored subscription, after main.bicep):
//   * the Activity Log diagnostic setting that streams all eight categories to the raw hub;
//   * Reader for the app identity, so enrich_fn can look up resources through ARM;
//   * optionally Security Admin, so enrich_fn can dismiss Defender for Cloud alerts.
//
//   az deployment sub create -l <region> -f infra/subscription.bicep \
//     -p principalId=<main output identityPrincipalId> diagnosticsSendRuleId=<main output diagnosticsSendRuleId>
//
// Deleting the resource group does NOT remove what this file creates; see infra/README.md (Tear down).

targetScope = 'subscription'

@description('Principal id of the Stormwatch function app identity (main.bicep output identityPrincipalId).')
param principalId string

@description('Resource id of the Send-only authorization rule on the raw namespace (main.bicep output diagnosticsSendRuleId).')
param diagnosticsSendRuleId string

@description('Raw hub the Activity Log is delivered to.')
param rawHubName string = 'raw'

@description('Name of the Activity Log diagnostic setting.')
param diagnosticSettingName string = 'stormwatch-activity-log'

@description('Grant Security Admin so enrich_fn can dismiss Defender alerts (set STORMWATCH_ALLOW_ALERT_DISMISS too).')
param grantSecurityAdmin bool = false

// Built-in roles.
var readerRoleId = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
var securityAdminRoleId = 'fb1c8493-542b-48eb-b624-b4c8fea62acd'

var activityLogCategories = [
  'Administrative'
  'Security'
  'ServiceHealth'
  'Alert'
  'Recommendation'
  'Policy'
  'Autoscale'
  'ResourceHealth'
]

resource activityLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: diagnosticSettingName
  properties: {
    eventHubAuthorizationRuleId: diagnosticsSendRuleId
    eventHubName: rawHubName
    logs: [for category in activityLogCategories: {
      category: category
      enabled: true
    }]
  }
}

// enrich_fn reads resource metadata across the subscription; Reader is the smallest built-in role
// that covers arbitrary resource types.
resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, readerRoleId)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', readerRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Off by default: only needed for the optional alert-dismissal action.
resource securityAdmin 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantSecurityAdmin) {
  name: guid(subscription().id, principalId, securityAdminRoleId)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', securityAdminRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

output activityLogDiagnosticSettingId string = activityLog.id
