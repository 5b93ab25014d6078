// Estate-wide onboarding: every current and future subscription under a management group streams its
// Activity Log to Stormwatch's raw hub, and the app identity may read each of them (enrich_fn).
//
//   az deployment mg create -m <management group id> -l <region> -f infra/managementgroup.bicep \
//     -p principalId=<main output identityPrincipalId> diagnosticsSendRuleId=<main output diagnosticsSendRuleId>
//
// Azure has a built-in DeployIfNotExists policy for the Activity Log to a Log Analytics workspace, but
// none for an Event Hub, so this ships its own definition (infra/policy/activity-log-to-event-hub.json,
// the same diagnostic setting subscription.bicep creates). The assignment's system-assigned identity
// gets Monitoring Contributor at the management group (to write diagnostic settings) and, through
// modules/policy-listkeys.bicep, a custom role that only reads and lists the raw namespace's Send rule
// (a diagnostic setting that names a SAS rule needs that). A remediation task brings the subscriptions
// that exist today into line; new ones are handled when they are created.

targetScope = 'managementGroup'

@description('Region of the policy assignment\'s identity and of the remediation deployments.')
param location string

@description('Principal id of the Stormwatch function app identity (main.bicep output identityPrincipalId); gets Reader on the management group.')
param principalId string

@description('Resource id of the Send-only authorization rule on the raw namespace (main.bicep output diagnosticsSendRuleId).')
param diagnosticsSendRuleId string

@description('Raw hub the Activity Log is delivered to.')
param rawHubName string = 'raw'

@description('Name of the Activity Log diagnostic setting the policy deploys.')
param diagnosticSettingName string = 'stormwatch-activity-log'

@description('Start a remediation task for the subscriptions that exist now.')
param remediateExisting bool = true

// Built-in roles.
var readerRoleId = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
var monitoringContributorRoleId = '749f88d5-cbae-40b8-bcfc-e573ddc772fa'

// /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.EventHub/namespaces/<ns>/authorizationRules/<rule>
var ruleIdParts = split(diagnosticsSendRuleId, '/')
var rawSubscriptionId = ruleIdParts[2]
var rawResourceGroup = ruleIdParts[4]
var rawNamespaceName = ruleIdParts[8]
var rawRuleName = ruleIdParts[10]

resource definition 'Microsoft.Authorization/policyDefinitions@2023-04-01' = {
  name: 'stormwatch-activity-log-to-event-hub'
  properties: loadJsonContent('policy/activity-log-to-event-hub.json')
}

resource assignment 'Microsoft.Authorization/policyAssignments@2024-04-01' = {
  name: 'stormwatch-activity-log'
  location: location
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    displayName: 'Stormwatch: stream the Activity Log to the raw hub'
    policyDefinitionId: definition.id
    enforcementMode: 'Default'
    parameters: {
      eventHubAuthorizationRuleId: {
        value: diagnosticsSendRuleId
      }
      eventHubName: {
        value: rawHubName
      }
      diagnosticSettingName: {
        value: diagnosticSettingName
      }
      deploymentLocation: {
        value: location
      }
    }
  }
}

// The policy's deployments write diagnostic settings in every subscription below the group.
resource policyMonitoringContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(managementGroup().id, assignment.id, monitoringContributorRoleId)
  properties: {
    roleDefinitionId: tenantResourceId('Microsoft.Authorization/roleDefinitions', monitoringContributorRoleId)
    principalId: assignment.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// enrich_fn reads resources in every subscription below the group (as subscription.bicep grants per subscription).
resource appReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(managementGroup().id, principalId, readerRoleId)
  properties: {
    roleDefinitionId: tenantResourceId('Microsoft.Authorization/roleDefinitions', readerRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

module policyRuleAccess 'modules/policy-listkeys.bicep' = {
  name: 'stormwatch-policy-listkeys'
  scope: resourceGroup(rawSubscriptionId, rawResourceGroup)
  params: {
    principalId: assignment.identity.principalId
    namespaceName: rawNamespaceName
    ruleName: rawRuleName
  }
}

resource remediation 'Microsoft.PolicyInsights/remediations@2021-10-01' = if (remediateExisting) {
  name: 'stormwatch-activity-log-existing'
  properties: {
    policyAssignmentId: assignment.id
    resourceDiscoveryMode: 'ExistingNonCompliant'
  }
  dependsOn: [
    policyMonitoringContributor
    policyRuleAccess
  ]
}

output policyAssignmentId string = assignment.id
output policyPrincipalId string = assignment.identity.principalId
